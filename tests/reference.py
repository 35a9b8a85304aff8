"""Independent float64 / arbitrary-precision references for Algorithm 1 and Eqs. (2), (9).

Written from the paper's formulas, in the direct (not log-space) form, so that the library's
log-space code is checked against a different derivation.
"""

from __future__ import annotations

import decimal
import math

import numpy as np


def absgd_weights_reference(loss_stream, lam, gamma, s0=None, lam_schedule=None):
  """Algorithm 1, steps 3-5, in float64. Yields (weights, s) per batch.

  s0=None sets s from the first batch; a change of lam re-estimates s from the batch.
  """
  s = s0
  last_lam = None
  out = []
  for t, losses in enumerate(loss_stream):
    lam_t = lam_schedule(t) if lam_schedule is not None else lam
    losses = np.asarray(losses, np.float64)
    if math.isinf(lam_t):
      out.append((np.ones_like(losses), 1.0))
      s, last_lam = 1.0, lam_t
      continue
    e = np.exp(losses / lam_t)
    g = e.mean()
    if s is None or (last_lam is not None and lam_t != last_lam):
      s = g
    else:
      s = (1.0 - gamma) * s + gamma * g
    last_lam = lam_t
    out.append((e / s, s))
  return out


def absgd_weights_decimal(loss_stream, lam, gamma, s0=None, prec=60):
  """Algorithm 1 in arbitrary precision (decimal), for losses whose exp overflows float64.

  Returns per batch (weights as float64, log s as float64).
  """
  ctx = decimal.Context(prec=prec, Emax=10**9, Emin=-(10**9))
  D = lambda x: ctx.create_decimal(repr(float(x)))
  s = None if s0 is None else D(s0)
  out = []
  for losses in loss_stream:
    e = [ctx.exp(ctx.divide(D(l), D(lam))) for l in losses]
    g = ctx.divide(sum(e, D(0)), D(len(e)))
    s = g if s is None else ctx.add(ctx.multiply(D(1 - gamma), s), ctx.multiply(D(gamma), g))
    w = [float(ctx.divide(x, s)) for x in e]
    out.append((np.array(w), float(s.ln(ctx))))
  return out


def heavy_ball_reference(grads, w0, lrs, momentum, weight_decay):
  """Eq. (2): w_{t+1} = w_t - lr_t (g_t + wd w_t) + beta (w_t - w_{t-1}), float64."""
  w_prev = np.asarray(w0, np.float64)
  w = w_prev.copy()
  path = []
  for g, lr in zip(grads, lrs):
    w_next = w - lr * (np.asarray(g, np.float64) + weight_decay * w) + momentum * (w - w_prev)
    w_prev, w = w, w_next
    path.append(w.copy())
  return path


def pytorch_sgd_reference(grads, w0, lrs, momentum, weight_decay):
  """torch.optim.SGD's rule: b_t = beta b_{t-1} + (g_t + wd w_t) (b_1 = g_1 + wd w_1);
  w_{t+1} = w_t - lr_t b_t, float64."""
  w = np.asarray(w0, np.float64)
  b = None
  path = []
  for g, lr in zip(grads, lrs):
    d = np.asarray(g, np.float64) + weight_decay * w
    b = d if b is None else momentum * b + d
    w = w - lr * b
    path.append(w.copy())
  return path


def abadam_reference(grads, w0, lr, b1, b2, eps, weight_decay, bias_correction):
  """Eq. (9), optionally with Adam's bias correction of v and u, float64."""
  w = np.asarray(w0, np.float64)
  v = np.zeros_like(w)
  u = np.zeros_like(w)
  path = []
  for t, g in enumerate(grads, start=1):
    g = np.asarray(g, np.float64)
    v = b1 * v + (1 - b1) * g
    u = b2 * u + (1 - b2) * g * g
    vh, uh = (v / (1 - b1**t), u / (1 - b2**t)) if bias_correction else (v, u)
    w = w - lr * (vh / (np.sqrt(uh) + eps) + weight_decay * w)
    path.append(w.copy())
  return path
