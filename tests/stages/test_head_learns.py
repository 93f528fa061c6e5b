"""The Bayes-by-Backprop head learns a synthetic set with known, star-dependent noise (issue 26).

Synthetic "stars": features ``X ~ N(0, 1)`` of width ``D`` (standing in for frozen backbone
features), a noise-free label ``truth = X @ w + 0.3 sin(x_1)`` (linear plus a mild
nonlinearity, ``|w| = 1``) and an observed label ``y = truth + sigma * eps`` whose noise scale
``sigma = 0.2 * 5 ** Phi(x_0)`` spans 0.2 to 1.0 (5x, log-uniform) and depends on a feature the
head sees, as faint stars are noisier. The head is the real :class:`HeadModule` with the shipped
``conf/stage/head.yaml`` settings (the heteroscedastic noise, 200 epochs), trained through
Lightning on the stage's own random-view dataset exactly as
:func:`stellarexp.stages.head.fit_head` does (early stopping on a validation set), and scored on
separate held-out stars:

- RMSE of the predictive mean against the noise-free truth at least 20% below the standard
  deviation of the labels;
- Spearman rho of ``|mean - y|`` with the predictive std at least 0.3: the noise the set varies
  is in the observed labels, which the predictive describes (the true sigma itself reaches
  0.40 here, the ceiling of any std);
- the predictive std ranks the stars by their true noise scale (Spearman rho at least 0.5).

Measured for seeds 0/1/2 (2,000 training stars, 200 epochs, 35-47 s each): RMSE 0.28/0.27/
0.28 against label standard deviations 0.98/1.07/1.10; rho against the labels 0.303/0.339/0.349;
std against the true sigma 0.72/0.73/0.75. Against the noise-free truth the std ranks the errors
with rho 0.19-0.27 only (the true sigma 0.19-0.21): those errors are the fit's, not the label
noise. The homoscedastic head (``noise: learn``, the std its weight draws' spread) gave rho
against the labels 0.21-0.27 and an RMSE of 0.44-0.46 after 60 epochs (2,400 stars).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SEED = 0
D = 32
N_TRAIN, N_VAL, N_TEST = 2000, 500, 3000


def synthetic_stars(n: int, rng: np.random.Generator, w: np.ndarray):
    """``(X [n, D] float32, truth [n], sigma [n], y [n])`` of ``n`` synthetic stars."""
    from scipy.special import ndtr

    x = rng.standard_normal((n, len(w))).astype(np.float32)
    truth = x.astype(float) @ w + 0.3 * np.sin(x[:, 1])
    sigma = 0.2 * 5.0 ** ndtr(x[:, 0])  # 0.2 .. 1.0, rising with feature 0 ("fainter")
    return x, truth, sigma, truth + sigma * rng.standard_normal(n)


def score_head(seed: int = SEED, root=None, noise=None) -> dict[str, float]:
    """Train the head on one synthetic set; RMSE, label std and rho on the held-out stars."""
    import logging
    import warnings

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping
    from omegaconf import OmegaConf
    from scipy.stats import spearmanr
    from torch.utils.data import DataLoader, TensorDataset

    from stellarexp.data.scalers import LabelScaler
    from stellarexp.evaluate.metrics import error_spearman
    from stellarexp.home import conf_dir
    from stellarexp.models.image_module import HeadModule
    from stellarexp.stages.head import _RandomView, physical_prediction
    from stellarexp.stages.image_common import plain

    st = OmegaConf.load(conf_dir() / "stage" / "head.yaml")  # the shipped defaults
    if noise is not None:
        st.noise = noise
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    w = rng.standard_normal(D) / np.sqrt(D)
    x_tr, _, _, y_tr = synthetic_stars(N_TRAIN, rng, w)
    x_va, _, _, y_va = synthetic_stars(N_VAL, rng, w)
    x_te, truth, sigma, y_te = synthetic_stars(N_TEST, rng, w)
    scaler = LabelScaler.fit(y_tr[:, None], ["teff"])

    def standardised(y):
        return torch.from_numpy(scaler.transform(y[:, None]).astype("float32"))

    # the constructor call of fit_head, with the shipped settings
    module = HeadModule(
        D, ["teff"], n_train=N_TRAIN, hidden=list(st.hidden), prior=plain(st.prior),
        activation=str(st.activation), repeats=int(st.repeats), rho_init=float(st.rho_init),
        kl_mode=str(st.kl), likelihood="gaussian",
        noise=st.noise if isinstance(st.noise, str) else float(st.noise), lr=float(st.lr),
        eval_samples=int(st.eval_samples), max_nan_steps=int(st.max_nan_steps))
    module.label_scaler = scaler
    # fit_head's data: one random view per star per epoch (here the cache has a single view)
    train = DataLoader(_RandomView(torch.from_numpy(x_tr)[None], standardised(y_tr),
                                   torch.Generator().manual_seed(seed + 1)),
                       batch_size=int(st.batch_size), shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TensorDataset(torch.from_numpy(x_va), standardised(y_va)), batch_size=4096)
    trainer = L.Trainer(
        callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=int(st.patience),
                                 check_on_train_epoch_end=False)],
        enable_checkpointing=False, accelerator="cpu", devices=1, max_epochs=int(st.max_epochs),
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on 2 busy cores are ~5x slower per step than 1
    pl_log = logging.getLogger("lightning.pytorch")
    level = pl_log.level
    pl_log.setLevel(logging.WARNING)  # no "GPU available" banners
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            trainer.fit(module, train, val)
        module.eval()
        pred = physical_prediction(module, torch.from_numpy(x_te), scaler, int(st.n_samples))
    finally:
        torch.set_num_threads(threads)
        pl_log.setLevel(level)
    mean, std = pred["mean"][:, 0], pred["std"][:, 0]
    return {"rmse": float(np.sqrt(np.mean((mean - truth) ** 2))), "label_std": float(np.std(y_te)),
            "rho": error_spearman(truth, mean, std),
            "rho_labels": error_spearman(y_te, mean, std),
            "rho_labels_true_sigma": error_spearman(y_te, mean, sigma),
            "std_tracks_sigma": float(spearmanr(std, sigma).statistic),
            # diagnostics: how well the true noise scale itself ranks the errors
            "rho_true_sigma": error_spearman(truth, mean, sigma),
            "epochs": float(trainer.current_epoch)}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return score_head(SEED, str(tmp_path_factory.mktemp("head_learns")))


def test_head_rmse_well_below_label_spread(scored):
    assert np.isfinite(scored["rmse"]) and scored["label_std"] > 0
    assert scored["rmse"] <= 0.8 * scored["label_std"], scored


def test_head_std_ranks_errors_against_the_labels(scored):
    assert scored["rho_labels"] >= 0.3, scored


def test_head_std_follows_the_true_noise_scale(scored):
    assert scored["std_tracks_sigma"] >= 0.5, scored
