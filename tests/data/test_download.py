"""Frame downloader against a real HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import bz2
import io
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from astropy.io import fits

from stellarexp.data import frame_fetch
from stellarexp.data.download import FramesMissingError, download_frames, ensure_frames
from stellarexp.data.frame_cache import (
    FrameIntegrityError,
    check_frame,
    frame_cache_path,
    frame_url,
)
from stellarexp.sdss import frame_relpath

FAST = {"timeout": 5.0, "backoff": 0.001, "progress": False, "workers": 1}


def make_frame_bytes(seed: int = 0, shape=(24, 32)) -> bytes:
    """A small bz2-compressed FITS file with a float32 image in HDU0, like a frame."""
    rng = np.random.default_rng(seed)
    hdu = fits.PrimaryHDU(rng.normal(size=shape).astype(np.float32))
    hdu.header["FILTER"] = "r"
    buf = io.BytesIO()
    fits.HDUList([hdu]).writeto(buf)
    return bz2.compress(buf.getvalue())


class FrameServer:
    """A threaded HTTP server with per-path behaviours and request counts.

    ``routes`` maps a URL path to bytes (served normally) or to a callable
    ``(handler, n_previous_requests) -> None`` that writes the whole response itself.
    """

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.hits: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                n = server.hits[self.path]
                server.hits[self.path] += 1
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                elif callable(route):
                    route(self, n)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sas"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def path_of(self, band, run, camcol, field):
        return "/sas/" + frame_relpath(band, run, camcol, field)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FrameServer() as srv:
        yield srv


def no_partials(root) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".partial")]


def test_frame_url_and_cache_path_follow_sas_layout(tmp_path):
    assert frame_url("g", 4510, 4, 30, base_url="http://x/y/") == (
        "http://x/y/frames/301/4510/4/frame-g-004510-4-0030.fits.bz2"
    )
    assert frame_cache_path(tmp_path, "g", 4510, 4, 30) == (
        tmp_path / "frames/301/4510/4/frame-g-004510-4-0030.fits.bz2"
    )
    assert frame_url("r", 1, 2, 3, base_url=None) == (
        "https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/1/2/frame-r-000001-2-0003.fits.bz2"
    )
    with pytest.raises(ValueError, match="http"):
        download_frames([(1, 2, 3)], tmp_path, base_url="data.sdss.org/sas", progress=False)
    with pytest.raises(ValueError, match="band"):
        download_frames([(1, 2, 3)], tmp_path, bands=["y"], progress=False)


def test_normal_fetch_into_sas_layout_then_present(server, tmp_path):
    fields = [(4510, 4, 30), (94, 1, 12)]
    payloads = {}
    for i, (band, f) in enumerate((b, f) for f in fields for b in "ugriz"):
        payloads[(band, *f)] = make_frame_bytes(i)
        server.routes[server.path_of(band, *f)] = payloads[(band, *f)]
    report = download_frames(fields + [(4510, 4, 30)], tmp_path, base_url=server.url, **FAST)
    assert report.ok and len(report.fetched) == 10 and not report.present
    for (band, run, camcol, field), data in payloads.items():
        dest = (
            tmp_path
            / "frames"
            / "301"
            / str(run)
            / str(camcol)
            / (f"frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2")
        )
        assert dest.read_bytes() == data
    assert max(server.hits.values()) == 1  # duplicate field requested once
    # Second call: everything checked and present, nothing requested again.
    before = sum(server.hits.values())
    again = download_frames(
        fields,
        tmp_path,
        base_url=server.url,
        workers=3,
        **{k: v for k, v in FAST.items() if k != "workers"},
    )
    assert again.ok and len(again.present) == 10 and not again.fetched
    assert sum(server.hits.values()) == before
    assert no_partials(tmp_path)


def test_threads_fetch_everything(server, tmp_path):
    fields = [(100, c, f) for c in (1, 2) for f in (11, 12)]
    for i, f in enumerate(fields):
        server.routes[server.path_of("r", *f)] = make_frame_bytes(i)
    report = download_frames(
        fields,
        tmp_path,
        bands="r",
        base_url=server.url,
        timeout=5,
        backoff=0.001,
        progress=False,
        workers=4,
    )
    assert len(report.fetched) == 4
    # Report follows request order, not completion order.
    assert report.fetched == [frame_cache_path(tmp_path, "r", *f) for f in fields]


def test_corrupt_cached_file_is_refetched(server, tmp_path):
    good = make_frame_bytes(3)
    server.routes[server.path_of("r", 1, 2, 3)] = good
    dest = frame_cache_path(tmp_path, "r", 1, 2, 3)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(good[: len(good) // 2])
    report = download_frames([(1, 2, 3)], tmp_path, bands=["r"], base_url=server.url, **FAST)
    assert report.fetched == [dest] and dest.read_bytes() == good


def test_content_length_larger_than_body_is_retried_then_reported(server, tmp_path):
    data = make_frame_bytes(1)

    def short_body(handler, n):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) + 5000))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])  # then the connection closes

    path = server.path_of("i", 7, 3, 9)
    server.routes[path] = short_body
    report = download_frames(
        [(7, 3, 9)], tmp_path, bands=["i"], base_url=server.url, retries=2, **FAST
    )
    assert not report.ok and not report.fetched
    (failure,) = report.failed
    assert failure.attempts == 3 and server.hits[path] == 3
    assert "incomplete" in failure.reason or "corrupt" in failure.reason
    assert not frame_cache_path(tmp_path, "i", 7, 3, 9).exists()
    assert no_partials(tmp_path)


def test_cut_bz2_stream_is_rejected_then_good_retry_accepted(server, tmp_path):
    data = make_frame_bytes(2)

    def cut_once(handler, n):
        body = data[: len(data) - 40] if n == 0 else data  # HTTP-valid, bz2 truncated
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    path = server.path_of("z", 7, 3, 9)
    server.routes[path] = cut_once
    report = download_frames(
        [(7, 3, 9)], tmp_path, bands=["z"], base_url=server.url, retries=2, **FAST
    )
    assert report.ok and server.hits[path] == 2
    assert frame_cache_path(tmp_path, "z", 7, 3, 9).read_bytes() == data


def test_cut_bz2_stream_every_time_is_reported(server, tmp_path):
    data = make_frame_bytes(2)
    server.routes[server.path_of("z", 7, 3, 9)] = data[:-40]
    report = download_frames(
        [(7, 3, 9)], tmp_path, bands=["z"], base_url=server.url, retries=1, **FAST
    )
    (failure,) = report.failed
    assert "truncated" in failure.reason and failure.attempts == 2
    assert not failure.path.exists() and no_partials(tmp_path)


def test_404_is_not_retried(server, tmp_path):
    server.routes[server.path_of("u", 5, 1, 1)] = make_frame_bytes(0)
    report = download_frames(
        [(5, 1, 1)], tmp_path, bands=["u", "g"], base_url=server.url, retries=4, **FAST
    )
    assert [p.name for p in report.fetched] == ["frame-u-000005-1-0001.fits.bz2"]
    (failure,) = report.failed
    assert "404" in failure.reason and failure.attempts == 1
    assert server.hits[server.path_of("g", 5, 1, 1)] == 1


def test_server_error_once_then_success(server, tmp_path):
    data = make_frame_bytes(4)

    def flaky(handler, n):
        if n == 0:
            handler.send_error(503, "Busy")
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    path = server.path_of("g", 8, 2, 40)
    server.routes[path] = flaky
    report = download_frames(
        [(8, 2, 40)], tmp_path, bands=["g"], base_url=server.url, retries=3, **FAST
    )
    assert report.ok and report.fetched and server.hits[path] == 2


def test_slow_server_times_out(server, tmp_path):
    def slow(handler, n):
        time.sleep(0.6)
        handler.send_error(500)

    server.routes[server.path_of("g", 8, 2, 41)] = slow
    report = download_frames(
        [(8, 2, 41)],
        tmp_path,
        bands=["g"],
        base_url=server.url,
        timeout=0.1,
        retries=1,
        backoff=0.001,
        progress=False,
    )
    (failure,) = report.failed
    assert "timed out" in failure.reason.lower() and failure.attempts == 2


def test_retry_backoff_is_exponential(monkeypatch, server, tmp_path):
    sleeps = []
    monkeypatch.setattr(frame_fetch.time, "sleep", sleeps.append)
    server.routes[server.path_of("g", 9, 1, 1)] = lambda h, n: h.send_error(502)
    download_frames(
        [(9, 1, 1)],
        tmp_path,
        bands=["g"],
        base_url=server.url,
        retries=3,
        backoff=0.5,
        timeout=5,
        progress=False,
    )
    assert sleeps == [0.5, 1.0, 2.0]


def _refused_url() -> str:
    with socket.socket() as s:  # grab a free port, then release it: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/sas"


def test_offline_raises_one_error_listing_every_file(tmp_path):
    fields = [(4510, 4, 30), (4510, 4, 31)]
    t0 = time.perf_counter()
    with pytest.raises(FramesMissingError) as info:
        ensure_frames(
            fields,
            tmp_path,
            download=True,
            base_url=_refused_url(),
            retries=2,
            backoff=0.001,
            timeout=2,
            progress=False,
        )
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert len(info.value.missing) == 10
    for run, camcol, field in fields:
        for band in "ugriz":
            assert str(frame_cache_path(tmp_path, band, run, camcol, field)) in msg
    assert "refused" in msg.lower() or "unreachable" in msg.lower()
    assert "put the files at" in msg


def test_ensure_frames_without_download_never_touches_network(server, tmp_path):
    server.routes[server.path_of("r", 1, 1, 1)] = make_frame_bytes(0)
    with pytest.raises(FramesMissingError) as info:
        ensure_frames([(1, 1, 1)], tmp_path, bands="r", base_url=server.url)
    assert sum(server.hits.values()) == 0
    assert "data.download=true" in str(info.value)
    assert str(frame_cache_path(tmp_path, "r", 1, 1, 1)) in str(info.value)
    # With download enabled the same call succeeds and returns the path.
    report = ensure_frames(
        [(1, 1, 1)], tmp_path, bands="r", base_url=server.url, download=True, **FAST
    )
    assert report.paths == [frame_cache_path(tmp_path, "r", 1, 1, 1)]
    # A corrupt cached file is reported, not deleted, when downloading is off.
    dest = report.paths[0]
    dest.write_bytes(b"BZh9 not really")
    with pytest.raises(FramesMissingError, match="present but unusable"):
        ensure_frames([(1, 1, 1)], tmp_path, bands="r")
    assert dest.exists()


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_check_frame_rejects_bad_files(tmp_path):
    good = tmp_path / "good.fits.bz2"
    good.write_bytes(make_frame_bytes(0, shape=(10, 12)))
    assert check_frame(good) == (10, 12)
    cases = {
        "truncated": make_frame_bytes(0)[:-30],
        "not_bz2": b"SIMPLE  =                    T",
        "not_fits": bz2.compress(b"hello world" * 100),
    }
    cube = io.BytesIO()
    fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)).writeto(cube)
    cases["three_dims"] = bz2.compress(cube.getvalue())
    flat = io.BytesIO()
    fits.PrimaryHDU(np.zeros((30, 40), np.float32)).writeto(flat)
    cases["data_cut"] = bz2.compress(flat.getvalue()[: 2880 + 100])  # header + a little data
    for name, data in cases.items():
        p = tmp_path / f"{name}.fits.bz2"
        p.write_bytes(data)
        with pytest.raises(FrameIntegrityError):
            check_frame(p)
