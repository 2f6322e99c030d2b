"""Export to ArviZ."""

from __future__ import annotations

import numpy as np

__all__ = ["to_inference_data"]


def to_inference_data(post, prediction=None):
    import arviz as az

    data = post.data
    if prediction is None:
        prediction = post.predict(data.ts, key=post.predictive_key())
    c, d = post.num_chains, post.num_draws
    coords = {
        "series": list(range(data.n_series)),
        "time_index": list(range(data.n_times)),
        "variable": list(data.names),
    }
    dims = {
        "y": ["series", "time_index", "variable"],
        "ts": ["series", "time_index"],
    }
    posterior = {}
    for k, v in post.samples.items():
        v = np.asarray(v)
        posterior[k] = v
        dims[k] = [f"{k}_dim_{i}" for i in range(v.ndim - 2)]
    s = prediction.num_samples
    y_pred = np.asarray(prediction.samples)
    if s == c * d:
        y_pred = y_pred.reshape((c, d) + y_pred.shape[1:])
    else:
        y_pred = y_pred[None]
    coords["pred_time_index"] = list(range(y_pred.shape[3]))
    pp_name = "y" if y_pred.shape[3] == data.n_times else "y_out"
    pp_dims = {"y_out": ["series", "pred_time_index", "variable"]}
    sample_stats = {k: np.asarray(v) for k, v in post.sample_stats.items()}
    idata = az.from_dict(
        posterior=posterior or None,
        posterior_predictive={pp_name: y_pred},
        sample_stats=sample_stats or None,
        observed_data={"y": np.asarray(data.ys)},
        constant_data={"ts": np.asarray(data.ts), "pred_ts": np.asarray(prediction.ts)},
        coords=coords,
        dims={**dims, **pp_dims, "pred_ts": ["series", "pred_time_index"]},
    )
    return idata
