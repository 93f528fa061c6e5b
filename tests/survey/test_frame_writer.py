"""SDSS corrected-frame writer and reader (stellarexp.sdss.frames) against real frames.

Real references, all under tests/data (the suite never needs ../shared):

* ``real_headers/frame-*.json``: the four HDU headers and the table layouts of the ten real DR17
  frames of fields 4510-4-30 and 2583-2-136 (made by ``real_headers/make_real_headers.py``);
* ``sdss_4510_4_30/frames/301/4510/4/``: real frames cropped with their real WCS (pixel values
  untouched), read with the same code as simulated frames.
"""

from __future__ import annotations

import bz2
import io
import json
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS, FITSFixedWarning

from stellarexp import sdss
from stellarexp.sdss.frames import FrameError, parse_frame_name, read_field, read_frame, sky_image
from stellarexp.survey import frame_writer
from stellarexp.survey.conditions import draw_field_conditions, tan_wcs_header
from stellarexp.survey.frame_writer import quantise, write_frame
from stellarexp.survey.render import render_band
from tests.support.paths import TESTS_DATA

DATA = TESTS_DATA
REAL_HEADERS = DATA / "real_headers"
SUBFRAMES = DATA / "sdss_4510_4_30"
SUBFRAME_DIR = SUBFRAMES / "frames" / "301" / "4510" / "4"

# Keywords the pipeline or a user relies on; every real frame has them, and so must ours.
KEYWORDS_THAT_MATTER = [
    "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "TAI", "DATE-OBS", "RUN", "FRAME", "CAMROW", "CCDLOC", "EXPTIME",
    "EQUINOX", "SOFTBIAS", "BUNIT", "FILTER", "CAMCOL", "RADECSYS", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2",
    "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "NMGY", "NMGYIVAR", "RERUN",
]


def _real_infos() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(REAL_HEADERS.glob("frame-*.json"))}


@pytest.fixture(scope="module")
def real() -> dict[str, dict]:
    infos = _real_infos()
    assert len(infos) == 10, "tests/data/real_headers must hold the 10 real frames' headers"
    for info in infos.values():
        info["hdr"] = [fits.Header.fromstring(text, sep="\n") for text in info["headers"]]
    return infos


@pytest.fixture(scope="module")
def sim_frame(tmp_path_factory):
    """One full-size simulated r frame (conditions, noise, a few stars), written and read back."""
    import pandas as pd

    rng = np.random.default_rng(2024)
    cond = draw_field_conditions(9001, 4, 30, rng, ra0=200.45, dec0=36.8)
    wcs = WCS(cond.bands["r"].wcs_header)
    ra, dec = wcs.wcs_pix2world([300.0, 1500.0], [400.0, 1000.0], 0)
    sources = pd.DataFrame({"ra": ra, "dec": dec, "flux_r": [500.0, 50.0]})
    rb = render_band(cond.bands["r"], cond.shape, sources["ra"], sources["dec"], sources["flux_r"], rng)
    path = tmp_path_factory.mktemp("sim") / sdss.frame_relpath("r", 9001, 4, 30)
    write_frame(path, rb.image, wcs_header=rb.wcs_header, band="r", run=9001, camcol=4, field=30, calib=rb.calib,
                allsky=rb.allsky, xinterp=rb.xinterp, yinterp=rb.yinterp, noise_sigma=rb.noise_sigma,
                tai=rb.tai, airmass=rb.airmass)
    raw = bz2.decompress(path.read_bytes())
    with fits.open(io.BytesIO(raw)) as hdul:  # plain astropy: an independent look at the file
        hdus = [(type(h).__name__, h.header.copy(), None if h.data is None else h.data.copy()) for h in hdul]
    return {"path": path, "rendered": rb, "cond": cond, "frame": read_frame(path), "hdus": hdus, "raw": raw}


def _small_frame_kwargs(ny=60, nx=80, band="r"):
    return {"wcs_header": tan_wcs_header(150.0, 20.0, 12.0, (ny, nx)), "band": band, "run": 9000, "camcol": 2,
            "field": 11, "calib": np.full(nx, 0.005, np.float32), "allsky": np.full((13, 10), 100.0, np.float32),
            "xinterp": ((np.arange(nx) + 0.5) / 8 - 0.5).astype(np.float32),
            "yinterp": ((np.arange(ny) + 0.5) / 8 + 0.5).astype(np.float32)}


# --------------------------------------------------------------------------- real fixture itself


def test_real_header_fixture_is_what_sdss_writes(real):
    for name, info in real.items():
        h = info["hdr"][0]
        assert isinstance(h["EXPTIME"], str) and float(h["EXPTIME"]) == pytest.approx(53.907456), name
        assert h["BUNIT"].strip() == "nanomaggy" and h["RADECSYS"].strip() == "ICRS"
        assert "FIELD" not in h, "real frames carry the field number only in the file name (and FRAME)"
        assert (h["NAXIS1"], h["NAXIS2"]) == (sdss.NAXIS1, sdss.NAXIS2)
        band, run, camcol, field = parse_frame_name(name + ".fits.bz2")
        assert (h["FILTER"].strip(), h["RUN"], h["CAMCOL"]) == (band, run, camcol)
        # drift scan: camera row k sees field N's sky in its raw frame N + 2 (k - 1)
        assert h["FRAME"] == field + 2 * (h["CAMROW"] - 1) and h["CAMROW"] == sdss.DRIFT_ORDER.index(band) + 1


# --------------------------------------------------------------------------- layout and keywords


def test_simulated_header_has_the_real_keywords_and_types(real, sim_frame):
    sim = sim_frame["hdus"][0][1]
    real_r = [info["hdr"][0] for name, info in real.items() if name.startswith("frame-r-")]
    all_real_keys = set().union(*(set(info["hdr"][0].keys()) for info in real.values()))
    for key in KEYWORDS_THAT_MATTER:
        assert key in sim, f"simulated frame lacks {key}"
        for h in real_r:
            assert key in h, f"real frame lacks {key}: fix KEYWORDS_THAT_MATTER"
            assert type(sim[key]) is type(h[key]), f"{key}: {type(sim[key]).__name__} vs real {type(h[key]).__name__}"
    invented = set(sim.keys()) - all_real_keys
    assert not invented, f"keywords real frames never have: {sorted(invented)}"
    assert sim["EXPTIME"] == "53.907456"
    assert sim["RADECSYS"] == "ICRS" and sim["BUNIT"] == "nanomaggy"
    assert sim["SOFTBIAS"] == sdss.SOFTBIAS == real_r[0]["SOFTBIAS"]
    assert (sim["CTYPE1"], sim["CTYPE2"]) == ("RA---TAN", "DEC--TAN")
    assert "FIELD" not in sim
    for key in ("CAMROW", "CRPIX1", "CRPIX2", "RERUN", "CCDMODE", "EQUINOX"):
        assert sim[key] == real_r[0][key], key
    assert sim["FRAME"] == 30 + 2 * (sim["CAMROW"] - 1)
    assert sim["NMGY"] == pytest.approx(float(np.mean(sim_frame["rendered"].calib)), rel=1e-6)


def test_simulated_cd_matrix_looks_like_the_real_ones(real, sim_frame):
    def cd(h):
        return np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])

    for h in [sim_frame["hdus"][0][1]] + [info["hdr"][0] for info in real.values()]:
        m = cd(h)
        scale = np.sqrt(abs(np.linalg.det(m))) * 3600
        assert scale == pytest.approx(0.396, abs=0.0015)
        assert np.linalg.det(m) < 0, "SDSS frames are mirror images of the sky (negative determinant)"
        # near-90-degree orientation: rows run along the scan, columns across it
        assert abs(m[0, 1]) > abs(m[0, 0]) and abs(m[1, 0]) > abs(m[1, 1])


def test_simulated_hdu_layout_matches_the_real_frames(real, sim_frame):
    hdus = sim_frame["hdus"]
    for name, info in real.items():
        lay = info["layout"]
        assert [h[0] for h in hdus] == lay["hdu_classes"], name
        assert hdus[0][2].dtype.str == lay["hdu0"]["dtype"] and list(hdus[0][2].shape) == lay["hdu0"]["shape"]
        assert hdus[1][2].dtype.str == lay["hdu1"]["dtype"] and list(hdus[1][2].shape) == lay["hdu1"]["shape"] == [2048]
        for idx, key in ((2, "hdu2_columns"), (3, "hdu3_columns")):
            table = hdus[idx][2]
            assert len(table) == 1, f"HDU{idx} has one row"
            assert table.columns.names == [c["name"] for c in lay[key]], f"HDU{idx} columns"
            for col, ref in zip(table.columns, lay[key]):
                assert str(col.format) == ref["format"], f"HDU{idx} {col.name} format"
                assert list(np.shape(table[col.name][0])) == ref["shape"], f"HDU{idx} {col.name} shape"
        assert hdus[2][2]["ALLSKY"][0].shape == (192, 256)


def test_astrometry_row_is_consistent_with_the_wcs(sim_frame):
    row = sim_frame["hdus"][3][2][0]
    h = sim_frame["hdus"][0][1]
    assert (row["RUN"], row["CAMCOL"], row["FIELD"], row["FILTER"]) == (9001, 4, 30, "r")
    assert list(row["NAXIS"]) == [sdss.NAXIS1, sdss.NAXIS2]
    # mu grows along rows, nu along columns, at 0.396"/pixel (as in the real asTrans rows)
    assert abs(row["B"]) * 3600 == pytest.approx(0.396, abs=0.002)
    assert abs(row["F"]) * 3600 == pytest.approx(0.396, abs=0.002)
    # the linear asTrans reproduces the WCS at the frame centre to a small fraction of a pixel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # RADECSYS, SDSS's old spelling
        ra, dec = WCS(h).wcs_pix2world([[1024.0, 744.0]], 0)[0]
    mu, nu = frame_writer.great_circle_coords(ra, dec, row["NODE"], row["INCL"])
    assert (row["A"] + row["B"] * 744 + row["C"] * 1024 - mu) * 3600 / 0.396 == pytest.approx(0, abs=0.05)
    assert (row["D"] + row["E"] * 744 + row["F"] * 1024 - nu) * 3600 / 0.396 == pytest.approx(0, abs=0.05)


# --------------------------------------------------------------------------- round trips


def test_round_trip_preserves_wcs_and_image_within_quantisation(sim_frame):
    rb, fr = sim_frame["rendered"], sim_frame["frame"]
    w0 = WCS(rb.wcs_header)
    yy, xx = np.mgrid[0:1489:97, 0:2048:131]
    x, y = xx.ravel().astype(float), yy.ravel().astype(float)
    ra, dec = w0.wcs_pix2world(x, y, 0)
    x1, y1 = fr.wcs.wcs_world2pix(ra, dec, 0)
    assert np.max(np.hypot(x1 - x, y1 - y)) < 1e-3
    step = 0.125 * rb.noise_sigma  # write_frame's default fraction
    assert fr.image.dtype == np.float32 and fr.image.shape == rb.image.shape
    assert np.max(np.abs(fr.image - rb.image)) <= step / 2 * (1 + 1e-4)
    assert np.array_equal(fr.image, quantise(rb.image, step))
    assert np.array_equal(fr.calib, rb.calib)
    assert np.array_equal(fr.allsky, rb.allsky)
    assert fr.gain == sdss.gain("r", 4) and fr.dark_variance == sdss.dark_variance("r", 4)


def test_unquantised_write_is_exact(tmp_path):
    kw = _small_frame_kwargs()
    img = np.random.default_rng(1).normal(size=(60, 80)).astype(np.float32)
    path = write_frame(tmp_path / "frame-r-009000-2-0011.fits.bz2", img, **kw)
    fr = read_frame(path)
    assert np.array_equal(fr.image, img)
    assert (fr.band, fr.run, fr.camcol, fr.field) == ("r", 9000, 2, 11)


def test_full_frame_is_a_few_mb_of_bz2(sim_frame):
    raw = sim_frame["path"].read_bytes()
    assert raw[:3] == b"BZh", "frames are bzip2 streams, like SDSS's .fits.bz2"
    assert 1.0e6 < len(raw) < 5.0e6, f"{len(raw) / 1e6:.2f} MB"
    assert len(sim_frame["raw"]) % 2880 == 0


def test_noise_map_matches_the_simulated_noise(sim_frame):
    fr, rb = sim_frame["frame"], sim_frame["rendered"]
    sigma = fr.sigma()
    assert np.median(sigma) == pytest.approx(rb.noise_sigma, rel=0.01)
    ivar = fr.invvar()
    assert ivar.dtype == np.float32 and np.all(np.isfinite(ivar)) and np.all(ivar > 0)
    assert np.allclose(fr.counts()[::50, ::50], (fr.image / fr.calib + fr.sky)[::50, ::50])


def test_sky_image_is_bilinear_interpolation_of_allsky():
    from scipy.ndimage import map_coordinates

    fr = read_frame(SUBFRAME_DIR / "frame-i-004510-4-0030.fits.bz2")
    yy, xx = np.meshgrid(fr.yinterp, fr.xinterp, indexing="ij")
    ref = map_coordinates(fr.allsky.astype(np.float64), [yy, xx], order=1, mode="nearest")
    assert np.allclose(sky_image(fr.allsky, fr.xinterp, fr.yinterp), ref, rtol=1e-6)


# --------------------------------------------------------------------------- real sub-frames


@pytest.mark.skipif(not SUBFRAME_DIR.is_dir(), reason="real sub-frame fixture tests/data/sdss_4510_4_30 not present")
def test_reader_reads_real_subframes():
    frames = read_field(SUBFRAMES, 4510, 4, 30)
    for band, fr in frames.items():
        assert fr.wcs.has_celestial and fr.wcs.celestial.wcs.ctype[0] == "RA---TAN"
        assert isinstance(fr.header["EXPTIME"], str)
        img = fr.image
        # Robust pixel noise by 3-sigma clipping. (1.4826 MAD snaps to the 1-DN steps of real
        # frames, ~sigma/5 in z, so it is a coarse estimate here.)
        _, _, noise = sigma_clipped_stats(img, sigma=3.0, maxiters=10)
        model = float(np.median(fr.sigma()))
        # the reader's noise model (gain, darkVariance, sky) predicts the real pixel noise:
        # u, g, r, i within 4%; z of this field is 10% noisier than the model
        assert model == pytest.approx(noise, rel=0.12), (band, model, noise)
        # the real pixels on the sky grid are where the WCS puts them: field 30's centre
        ra, dec = fr.wcs.wcs_pix2world([[img.shape[1] / 2, img.shape[0] / 2]], 0)[0]
        assert 200.3 < ra < 200.6 and 36.7 < dec < 36.95


# --------------------------------------------------------------------------- bad files and input


def test_corrupt_or_truncated_frames_raise_frame_error_naming_the_file(tmp_path):
    kw = _small_frame_kwargs()
    img = np.random.default_rng(2).normal(size=(60, 80)).astype(np.float32)
    good = write_frame(tmp_path / "good" / "frame-r-009000-2-0011.fits.bz2", img, **kw)
    plain = write_frame(tmp_path / "good" / "frame-r-009000-2-0012.fits", img, **kw)
    cases = {
        "truncated bz2": (good, good.read_bytes()[: good.stat().st_size // 2]),
        "corrupt bz2": (good, good.read_bytes()[:100] + b"\0" * 5000),
        "truncated fits": (plain, plain.read_bytes()[:-2880]),
        "cut mid-record": (plain, plain.read_bytes()[:-100]),
        "empty": (good, b""),
    }
    for what, (src, data) in cases.items():
        bad = tmp_path / what.replace(" ", "_") / src.name
        bad.parent.mkdir()
        bad.write_bytes(data)
        with pytest.raises(FrameError) as exc:
            read_frame(bad)
        assert str(bad) in str(exc.value), what
    with pytest.raises(FrameError, match="not found"):
        read_frame(tmp_path / "frame-r-009000-2-0099.fits.bz2")
    renamed = tmp_path / "image.fits.bz2"
    renamed.write_bytes(good.read_bytes())
    with pytest.raises(FrameError, match="not an SDSS frame name"):
        read_frame(renamed)


def test_interrupted_write_leaves_nothing_a_later_run_would_trust(tmp_path, monkeypatch):
    kw = _small_frame_kwargs()
    img = np.zeros((60, 80), np.float32)
    dest = tmp_path / sdss.frame_relpath("r", 9000, 2, 11)

    def crash_half_way(path, payload, chunk=1 << 20):
        with open(path, "wb") as fh:
            fh.write(payload[: len(payload) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(frame_writer, "_write_payload", crash_half_way)
    with pytest.raises(OSError, match="simulated"):
        write_frame(dest, img, **kw)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == [], "the temporary file must be removed"

    # an earlier good frame survives an interrupted overwrite untouched
    monkeypatch.undo()
    write_frame(dest, img + 1, **kw)
    before = dest.read_bytes()
    monkeypatch.setattr(frame_writer, "_write_payload", crash_half_way)
    with pytest.raises(OSError):
        write_frame(dest, img + 2, **kw)
    assert dest.read_bytes() == before

    # a leftover from a killed process (no cleanup possible) is never read as a frame
    leftover = dest.parent / f".{dest.name}.abc123.partial"
    leftover.write_bytes(before[:1000])
    with pytest.raises(FrameError):
        read_frame(leftover)
    assert read_field(tmp_path, 9000, 2, 11, bands=("r",))["r"].path == dest


def test_write_frame_rejects_impossible_input(tmp_path):
    kw = _small_frame_kwargs()
    img = np.zeros((60, 80), np.float32)
    dest = tmp_path / "frame-r-009000-2-0011.fits.bz2"
    with pytest.raises(ValueError, match="calib"):
        write_frame(dest, img, **{**kw, "calib": np.ones(79, np.float32)})
    with pytest.raises(ValueError, match="noise_sigma"):
        write_frame(dest, img, noise_sigma=-1.0, **kw)
    with pytest.raises(ValueError, match="image"):
        write_frame(dest, np.zeros((0, 80), np.float32), **kw)
    with pytest.raises(ValueError, match="band"):
        write_frame(dest, img, **{**kw, "band": "y"})
    assert not dest.exists()


def test_reader_checks_header_against_file_name(tmp_path):
    kw = _small_frame_kwargs()
    path = write_frame(tmp_path / "frame-r-009000-2-0011.fits", np.zeros((60, 80), np.float32), **kw)
    wrong = tmp_path / "frame-g-009000-2-0011.fits"
    path.rename(wrong)
    with pytest.raises(FrameError, match="FILTER"):
        read_frame(wrong)


def test_parse_frame_name():
    assert parse_frame_name("/x/frame-z-002583-2-0136.fits.bz2") == ("z", 2583, 2, 136)
    for bad in ("frame-r-2583-2-136.fits.bz2", "frame-y-002583-2-0136.fits.bz2", ".frame-r-002583-2-0136.fits.bz2.x.partial"):
        with pytest.raises(FrameError):
            parse_frame_name(bad)


def test_quantise_rounds_to_the_step():
    x = np.array([0.04, -0.06, 0.26, 1.0], np.float32)
    assert np.allclose(quantise(x, 0.1), [0.0, -0.1, 0.3, 1.0], atol=1e-7)
    assert np.array_equal(quantise(x, 0.0), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantise(np.zeros(3, np.float32), 0.5)
