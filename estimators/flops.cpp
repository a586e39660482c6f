#include "estimators/flops.h"

#include <stdexcept>

#include <fmt/format.h>

#include "runtime/checked.h"

namespace reckon {

namespace {
// Every count is CheckedInt arithmetic: a config whose counts do not fit int64 throws SizeOverflow.
OpCount make(CheckedInt calls, CheckedInt mm, CheckedInt other, CheckedInt read_elems, CheckedInt written_elems) {
  return OpCount{calls.value(), mm.value(), other.value(), (4 * read_elems).value(), (4 * written_elems).value(), 0.0};
}
}  // namespace

int64_t count_parameters(const ModelConfig& c) {
  const CheckedInt v = c.vocab_size, d = c.d_model, f = c.d_ff;
  const CheckedInt ffn_mats = c.ffn == FfnKind::swiglu ? 3 : 2;
  return (v * d                                                          // token embedding
         + (c.position == Position::learned ? c.context_length * d : CheckedInt(0))  // learned positions
         + c.num_layers * (2 * d + 4 * d * d + ffn_mats * f * d)         // norms, attention, ffn
         + d                                                             // final norm
         + (c.tie_embeddings ? CheckedInt(0) : v * d))                               // lm head
      .value();
}

std::map<OpKey, OpCount> estimate_step_counts(const ModelConfig& c, const AdamWConfig& optim) {
  const CheckedInt b = c.batch_size, t = c.context_length, d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const CheckedInt h = c.num_heads, dk = d / h, l = c.num_layers, n = b * t, bh = b * h;
  const CheckedInt causal = t * (t + 1) / 2;  // entries the causal softmax touches per (b, h)
  const bool swiglu = c.ffn == FfnKind::swiglu;
  const CheckedInt ffn_in = swiglu ? 2 : 1;  // linears D -> F per layer
  std::map<OpKey, OpCount> e;
  auto add = [&](const char* op, Phase phase, const OpCount& x) { e[OpKey{op, phase}] += x; };
  const Phase F = Phase::forward, B = Phase::backward, O = Phase::optimizer;

  // Token embedding: gather N rows; backward scatter-adds them (reads grad rows it adds into).
  add("embedding", F, make(1, 0, 0, n + n * d, n * d));
  add("embedding", B, make(1, 0, n * d, n + 2 * n * d, n * d));
  if (c.position == Position::learned) {
    add("position_embedding", F, make(1, 0, n * d, n * d + t * d, n * d));
    add("position_embedding", B, make(1, 0, n * d, n * d + t * d, t * d));
  }
  // RMSNorm: 2 per layer + the final one. Forward 4D+4 FLOPs a row; backward 10D+4, +D where dX is `+=`
  // (the two in-layer norms write into the residual stream's gradient; the final one writes it first).
  const CheckedInt norms = 2 * l + 1, acc_norms = 2 * l;
  add("rmsnorm", F, make(norms, 0, norms * n * (4 * d + 4), norms * (n * d + d), norms * (n * d + n)));
  add("rmsnorm", B, make(norms, 0, norms * n * (10 * d + 4) + acc_norms * n * d,
                         norms * (2 * n * d + n + 2 * d) + acc_norms * n * d, norms * (n * d + d)));
  // Linear layers inside the blocks: q, k, v, o (D -> D) and the ffn (D -> F twice or once, F -> D).
  // Forward reads x and W, writes y. Backward: dX = dY·W (reads dY, W, + dX when accumulating) and
  // dW += dYᵀ·X (reads dY, X, dW). dX accumulates for k and v (after q) and for w1 after w3 (swiglu).
  {
    const CheckedInt dd = 4, df = ffn_in, fd = 1;  // counts per layer of each shape
    const CheckedInt calls = l * (dd + df + fd);
    const CheckedInt mm = l * 2 * n * d * (dd * d + (df + fd) * f);
    const CheckedInt read = l * (dd * (n * d + d * d) + df * (n * d + f * d) + fd * (n * f + d * f));
    const CheckedInt written = l * (dd * n * d + df * n * f + fd * n * d);
    add("linear", F, make(calls, mm, 0, read, written));
    const CheckedInt acc_dd = 2, acc_df = swiglu ? 1 : 0;  // dX accumulations per layer
    const CheckedInt dw_adds = l * (dd * d * d + (df + fd) * f * d);
    const CheckedInt dx_adds = l * (acc_dd * n * d + acc_df * n * d);
    // per linear (N, IN -> OUT): dX reads N·OUT + OUT·IN (+ N·IN), writes N·IN; dW reads N·OUT + N·IN + OUT·IN,
    // writes OUT·IN.
    auto bwd_read = [&](CheckedInt in, CheckedInt out) { return 2 * n * out + 2 * out * in + n * in; };
    const CheckedInt read_b = l * (dd * bwd_read(d, d) + df * bwd_read(d, f) + fd * bwd_read(f, d)) + dx_adds;
    const CheckedInt written_b = l * (dd * (n * d + d * d) + df * (n * d + f * d) + fd * (n * f + d * f));
    add("linear", B, make(2 * calls, 2 * mm, dw_adds + dx_adds, read_b, written_b));
  }
  // Attention core per layer: QKᵀ (scaled), causal softmax, PV; backward dP, dV, softmax backward, dQ, dK
  // (both scaled). Matmuls count the full T×T products, the softmax only the causal part.
  // The 1/√d_k scale is a matmul output scale, executed (and counted) only when it is not 1: d_k = 1 has none.
  const CheckedInt scaled = dk == 1 ? 0 : 1;
  add("attention", F, make(3 * l, l * bh * 4 * t * t * dk, l * bh * (scaled * t * t + 5 * causal),
                           l * bh * (2 * t * dk + causal + t * t + t * dk), l * bh * (2 * t * t + t * dk)));
  add("attention", B, make(5 * l, l * bh * 8 * t * t * dk, l * bh * (scaled * 2 * t * dk + 4 * causal),
                           l * bh * (2 * t * dk + (t * t + t * dk) + 2 * causal + 2 * (t * t + t * dk)),
                           l * bh * (2 * t * t + 3 * t * dk)));
  // The gate (swiglu: silu(a)·b) or silu alone, N·F elements per layer.
  if (swiglu) {
    add("swiglu", F, make(l, 0, l * 5 * n * f, l * 2 * n * f, l * n * f));
    add("swiglu", B, make(l, 0, l * 12 * n * f, l * 3 * n * f, l * 2 * n * f));
  } else {
    add("silu", F, make(l, 0, l * 4 * n * f, l * n * f, l * n * f));
    add("silu", B, make(l, 0, l * 9 * n * f, l * 2 * n * f, l * n * f));
  }
  add("residual", F, make(2 * l, 0, 2 * l * n * d, 2 * l * 2 * n * d, 2 * l * n * d));
  // LM head: N×D times D×V; backward dX (written) and dW (accumulated).
  add("lm_head", F, make(1, 2 * n * d * v, 0, n * d + v * d, n * v));
  add("lm_head", B, make(2, 4 * n * d * v, v * d, 2 * n * v + 2 * v * d + n * d, n * d + v * d));
  add("cross_entropy", F, make(1, 0, n * (5 * v + 4) + 1, n * v + 2 * n, n * v + n));
  add("cross_entropy", B, make(1, 0, n * (v + 1) + 1, n * v + n, n * v));
  // Optimizer phase: zero_grad writes every gradient; AdamW reads p, g, m, v and writes p, m, v.
  const CheckedInt p = count_parameters(c);
  add("zero_grad", O, make(1, 0, 0, 0, p));
  add("adamw", O, make(1, 0, (optim.weight_decay != 0.0 ? 14 : 13) * p, 4 * p, 3 * p));
  return e;
}

StepFlops estimate_step_flops(const ModelConfig& config, const AdamWConfig& optim) {
  CheckedInt forward = 0, backward = 0, optimizer = 0, matmul_forward = 0, matmul_backward = 0;
  for (const auto& [key, count] : estimate_step_counts(config, optim)) {
    if (key.phase == Phase::forward) forward += count.flops(), matmul_forward += count.matmul_flops;
    if (key.phase == Phase::backward) backward += count.flops(), matmul_backward += count.matmul_flops;
    if (key.phase == Phase::optimizer) optimizer += count.flops();
  }
  (forward + backward + optimizer).value();  // total() must fit too
  return StepFlops{forward.value(), backward.value(), optimizer.value(), matmul_forward.value(),
                   matmul_backward.value()};
}

LinearFlops step_flops_linear_in_batch(const ModelConfig& config, const AdamWConfig& optim) {
  ModelConfig at = config;
  auto total = [&](int64_t b) {
    at.batch_size = b;
    return CheckedInt(estimate_step_flops(at, optim).total());
  };
  const CheckedInt f1 = total(1), f2 = total(2), f3 = total(3);
  const CheckedInt per_sample = f2 - f1, fixed = f1 - per_sample;
  if (f3 != fixed + 3 * per_sample) {
    throw std::logic_error(fmt::format("step FLOPs are not linear in the batch size: {}, {}, {} at B = 1, 2, 3",
                                       f1.value(), f2.value(), f3.value()));
  }
  return LinearFlops{per_sample.value(), fixed.value()};
}

}  // namespace reckon
