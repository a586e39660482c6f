// The step's counts per op × phase as closed forms of the config: the aggregate algebra reckon used before its
// counts were composed from the ops' own declared counts (estimators/replay.cpp). Kept here as an independent
// oracle: the composed counts must equal it for every config it covers (test_estimators), so a slip in the
// replay's call sequence or in an op's count shows as a difference against arithmetic written separately.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "estimators/flops.h"
#include "model/config.h"
#include "model/layout.h"
#include "ops/flash_attention.h"
#include "optim/data_parallel.h"
#include "optim/zero.h"
#include "runtime/checked.h"
#include "runtime/counters.h"
#include "tests/param_count_oracle.h"

namespace reckon::testing_ref {

inline std::map<OpKey, OpCount> closed_form_step_counts(const ModelConfig& c, const AdamWConfig& optim,
                                                        int data_parallel_ranks, int data_parallel_rank) {
  const CheckedInt b = c.batch_size, t = c.context_length, d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const CheckedInt h = c.num_heads, dk = c.head_size(), l = c.num_layers, n = b * t, bh = b * h;
  // Grouped K/V heads: q and the context are H·d_k wide, k and v KV·d_k; g = H / KV query heads per K/V head, and
  // B·(H − KV) query heads whose dK and dV are added into their group's.
  const CheckedInt qw = h * dk, kvw = CheckedInt(c.kv_heads()) * dk, g = h / c.kv_heads();
  const CheckedInt shared = b * (h - c.kv_heads());
  const bool gated = ffn_gated(c.ffn);
  const CheckedInt ffn_in = gated ? 2 : 1;  // linears D -> F per layer
  // Bytes per element (model/precision.h): P parameters, G gradients, A the bf16 region (matmul operands and
  // outputs, attention, gate, logits); 4 for the float32 residual stream, norm statistics, batch and losses.
  const DTypePlan plan = c.dtypes();
  const CheckedInt P = dtype_bytes(plan.param), G = dtype_bytes(plan.grad), A = dtype_bytes(plan.act), F = 4;
  const bool mixed = plan.act != DType::f32;
  // FSDP's mixed precision (amp-bf16 at ZeRO-3): no autocast copies; each gather of a linear's weight or bias, or of
  // an untied head, casts this rank's float32 shard into the gathered bf16 operand (below, with the gathers).
  const bool fsdp = plan.weight_cache && c.zero_stage == 3;
  auto bf16_operand = [&](const ParamSpec& ps) {
    return fsdp && (ps.role == ParamRole::attention || ps.role == ParamRole::ffn || ps.role == ParamRole::lm_head);
  };
  std::map<OpKey, OpCount> e;
  // calls, matmul FLOPs, other FLOPs, bytes read, bytes written.
  auto add = [&](const char* op, Phase phase, CheckedInt calls, CheckedInt mm, CheckedInt other, CheckedInt read,
                 CheckedInt written) {
    e[OpKey{op, phase}] += OpCount{calls.value(), mm.value(), other.value(), read.value(), written.value(), 0.0};
  };
  const Phase Fw = Phase::forward, Bw = Phase::backward, O = Phase::optimizer;

  // Token embedding: gather N rows; backward scatter-adds them (reads grad rows it adds into).
  // Gemma's √D scale: one multiply per element each way, inside the gather and the scatter.
  const CheckedInt emb_scaled = c.scale_embeddings ? 1 : 0;
  add("embedding", Fw, 1, 0, emb_scaled * n * d, F * n + P * n * d, F * n * d);
  add("embedding", Bw, 1, 0, (1 + emb_scaled) * n * d, F * (n + n * d) + G * n * d, G * n * d);
  if (c.position == Position::learned) {
    add("position_embedding", Fw, 1, 0, n * d, F * n * d + P * t * d, F * n * d);
    add("position_embedding", Bw, 1, 0, n * d, F * n * d + G * t * d, G * t * d);
  }
  // Norms: 2 per layer (parallel blocks: 1) + the final one; dX is `+=` in the in-layer norms (into the residual
  // stream's gradient; the final one writes it first). x, dy, dx and the statistics float32; gain (and bias) P, their
  // gradients G; output A (the matmuls' input).
  //   RMSNorm: forward 4D+4 FLOPs a row, writes rstd; backward 10D+4 (+D accumulating).
  //   LayerNorm (two-pass variance): forward 7D+5 (+D with β), writes mean and rstd; backward 17D+2 (+D with β)
  //   (+D accumulating), reads both statistics.
  // A parallel block has one norm a layer (its gradient: the sum of both branches', in one buffer). Norms before the
  // sublayers (pre, sandwich) write the bf16 region and add their dX into the residual stream's gradient; norms after
  // them (post, sandwich) write float32 (into the residual add) and their dX into a new buffer.
  const bool parallel = c.block == Block::parallel;
  const bool pre = c.norm_placement != NormPlacement::post, post = c.norm_placement != NormPlacement::pre;
  const CheckedInt pre_norms = parallel ? l : pre ? 2 * l : CheckedInt(0), post_norms = post ? 2 * l : CheckedInt(0);
  const CheckedInt layer_norms = pre_norms + post_norms, norms = layer_norms + 1, acc_norms = pre_norms;
  const bool ln = c.norm == NormKind::layernorm;
  const CheckedInt beta = c.norm_bias ? 1 : 0, stats = ln ? 2 : 1;  // per-row float32 statistics
  const char* norm_op = ln ? "layernorm" : "rmsnorm";
  const CheckedInt norm_fwd = ln ? 7 * d + 5 + beta * d : 4 * d + 4, norm_bwd = ln ? 17 * d + 2 + beta * d : 10 * d + 4;
  // A unit-offset norm (Gemma) reads its float32 gain 1 + w, made by op norm_gain (D adds) before each norm call, in
  // each direction.
  const bool offset = c.norm_unit_offset;
  const CheckedInt NW = offset ? F : P;
  auto add_gain = [&](Phase phase, CheckedInt count) {
    if (offset) add("norm_gain", phase, count, 0, count * d, count * P * d, count * F * d);
  };
  auto add_norm_forward = [&](Phase phase, CheckedInt count, CheckedInt out_bytes) {
    add_gain(phase, count);
    add(norm_op, phase, count, 0, count * n * norm_fwd, count * (F * n * d + NW * d * (1 + beta)),
        count * (out_bytes * n * d + F * stats * n));
  };
  add_norm_forward(Fw, 1, A);  // the final norm; the blocks' two each are in add_block_forward below
  add(norm_op, Bw, norms, 0, norms * n * norm_bwd + acc_norms * n * d,
      norms * (F * (2 * n * d + stats * n) + (NW + G) * d + G * beta * d) + acc_norms * F * n * d,
      norms * (F * n * d + G * d * (1 + beta)));
  add_gain(Bw, norms);
  // qk_norm: RMSNorm over q (width qw) and k (kvw) rows of N, in A (x, y, dy, dx), every layer: forward (and recompute
  // = full), backward writing a new dX; a unit-offset gain is made before each call too.
  auto add_qk_norm_forward = [&](Phase phase) {
    if (!c.qk_norm) return;
    for (const CheckedInt& w : {qw, kvw}) {
      if (offset) add("norm_gain", phase, l, 0, l * w, l * P * w, l * F * w);
      add("rmsnorm", phase, l, 0, l * n * (4 * w + 4), l * (A * n * w + NW * w), l * (A * n * w + F * n));
    }
  };
  if (c.qk_norm) {
    for (const CheckedInt& w : {qw, kvw}) {
      if (offset) add("norm_gain", Bw, l, 0, l * w, l * P * w, l * F * w);
      add("rmsnorm", Bw, l, 0, l * n * (10 * w + 4), l * (A * 2 * n * w + F * n + (NW + G) * w),
          l * (A * n * w + G * w));
    }
  }
  // The attention biases over the layers: their elements (= the OUT widths of the biased linears) and count.
  CheckedInt biased_out = 0, bias_calls = 0;
  if (c.attention_bias != AttentionBias::none) biased_out += l * (qw + 2 * kvw), bias_calls += 3 * l;
  if (c.attention_bias == AttentionBias::qkvo) biased_out += l * d, bias_calls += l;
  if (c.mlp_bias) biased_out += l * (ffn_in * f + d), bias_calls += l * (ffn_in + 1);  // w1 (w3), w2
  OpCount linear_forward;                                                              // all blocks' linears, forward
  // Linear layers inside the blocks: q, k, v, o (D -> D) and the ffn (D -> F twice or once, F -> D).
  // Forward reads x and W (A), writes y: A for q, k, v, w1, w3 (saved), float32 for o and w2 (added to the
  // residual stream). Backward: dX = dY·W reads dY, W (+ dX when accumulating), writes dX — float32 for q, k,
  // v, w1, w3 (into a norm's float32 grad_out), A for o and w2 (into the attention / gate backward);
  // dW += dYᵀ·X reads dY, X and dW (G), writes dW. dX accumulates for k and v (after q) and for w1 after w3.
  {
    CheckedInt calls = 0, mm = 0, read_f = 0, written_f = 0, read_b = 0, written_b = 0, other_b = 0;
    // q, k, v: y in A, dX float32 (k, v accumulate); o: y float32, dX in A; w1, w3: y in A, dX float32 (w1
    // accumulates after w3 for swiglu); w2: y float32, dX in A.
    auto add_linear = [&](CheckedInt count, CheckedInt in, CheckedInt out, CheckedInt y_bytes, CheckedInt dx_bytes,
                          CheckedInt acc_count) {
      calls += count;
      mm += count * 2 * n * in * out;
      read_f += count * A * (n * in + out * in);
      written_f += count * y_bytes * n * out;
      read_b += count * (A * (2 * n * out + out * in + n * in) + G * out * in) + acc_count * dx_bytes * n * in;
      written_b += count * (dx_bytes * n * in + G * out * in);
      other_b += count * out * in + acc_count * n * in;
    };
    // q's dX adds to the ffn's (parallel) or into the residual stream's gradient (post norms only); so do w3's (gated)
    // or w1's (plain) with post norms only.
    const CheckedInt into_stream = pre ? CheckedInt(0) : l;
    add_linear(l, d, qw, A, F, parallel ? l : into_stream);
    add_linear(2 * l, d, kvw, A, F, 2 * l);
    add_linear(l, qw, d, F, A, 0);
    add_linear(ffn_in * l, d, f, A, F, (gated ? l : CheckedInt(0)) + into_stream);
    add_linear(l, f, d, F, A, 0);
    // Biases (attention_bias, mlp_bias): forward N·OUT adds inside each biased call, reading the OUT values (in A);
    // backward one more call per bias summing dY's rows (N·OUT adds; reads dY in A and the bias gradient, writes it, in
    // G).
    linear_forward = OpCount{calls.value(),     mm.value(), (n * biased_out).value(), (read_f + A * biased_out).value(),
                             written_f.value(), 0.0};
    add("linear", Bw, 2 * calls + bias_calls, 2 * mm, other_b + n * biased_out,
        read_b + A * n * biased_out + G * biased_out, written_b + G * biased_out);
  }
  // Attention core per layer: QKᵀ (scaled), [soft-capping], causal softmax [in a window], PV; backward dP, dV,
  // softmax backward, dQ, dK (both scaled). Matmuls count the full T×T products, the softmax only the visible part:
  // V = Σ over layers and rows of the keys row i sees (max(0, i − W + 1) … i, W the layer's window), NB the 64-key
  // blocks holding them (flash). Every tensor in A. The 1/√d_k scale is a matmul output scale, executed (and
  // counted) only when it is not 1: d_k = 1 has none. Capped (c·tanh(s / c)): naive 3 FLOPs an entry each way and a
  // saved tanh (T² written); flash folds 1 / c into the query factor, 2 FLOPs an entry forward, 5 backward.
  CheckedInt visible = 0, blocks = 0;  // per (b, h), over the layers
  {
    int64_t windowed = 0;
    for (int64_t layer = 0; layer < c.num_layers; ++layer) windowed += c.layer_window(layer) > 0 ? 1 : 0;
    for (const auto& [layers, w] : {std::pair{windowed, c.sliding_window}, std::pair{c.num_layers - windowed, 0L}}) {
      int64_t rows_visible = 0, rows_blocks = 0;
      for (int64_t i = 0; layers > 0 && i < c.context_length; ++i) {
        const int64_t lo = w > 0 ? std::max<int64_t>(0, i - w + 1) : 0;
        rows_visible += i + 1 - lo;
        rows_blocks += i / 64 - lo / 64 + 1;
      }
      visible += CheckedInt(layers) * rows_visible;
      blocks += CheckedInt(layers) * rows_blocks;
    }
  }
  const CheckedInt capped = c.attn_logit_softcapping > 0 ? 1 : 0;
  // ALiBi: m·(j − i) and its add per visible score — naive twice forward (its max pass and its exp pass), flash once
  // forward and once in backward's recompute of the scores; nothing in naive's backward (it reads P).
  const CheckedInt alibi = c.position == Position::alibi ? 1 : 0;
  const CheckedInt scaled = dk == 1 ? 0 : 1;
  const float flash_factor = 1.0f / std::sqrt(static_cast<float>(c.head_size())) /
                             (capped == 1 ? static_cast<float>(c.attn_logit_softcapping) : 1.0f);
  const CheckedInt flash_scaled = flash_factor == 1.0f ? 0 : 1;
  // Forward of the attention core of every layer under `phase`: forward, or recompute (recompute = attention re-runs
  // it in backward).
  auto add_attention_forward = [&](Phase phase) {
    if (c.attention == AttentionKind::flash) {
      add("attention", phase, l, bh * 4 * dk * visible,
          bh * ((4 + 2 * capped + 2 * alibi) * visible + blocks * (dk + 4) + l * t * (dk + 3) +
                l * flash_scaled * t * dk),
          A * l * n * (qw + 2 * kvw), A * l * n * qw + F * l * bh * t);
    } else {  // g calls per product (one per group member), the softmax between them
      add("attention", phase, (2 * g + 1) * l, l * bh * 4 * t * t * dk,
          l * bh * scaled * t * t + bh * (5 + 3 * capped + 4 * alibi) * visible,
          A * (l * bh * (2 * t * dk + t * t + t * dk) + bh * visible), A * l * bh * ((2 + capped) * t * t + t * dk));
    }
  };
  if (c.attention == AttentionKind::flash) {
    // One call per layer each way; visible rows only; the factor folded into the query rows (and dQ) when it is
    // not 1; compulsory bytes: each tensor once (ops/flash_attention.h).
    // With groups, each query head after its group's first adds its dK and dV (2·T·d_k FLOPs).
    add("attention", Bw, l, bh * 10 * dk * visible,
        bh * (4 + 5 * capped + 2 * alibi) * visible +
            l * (bh * (2 * t * dk + flash_scaled * 2 * t * dk) + shared * 2 * t * dk),
        A * l * n * (3 * qw + 2 * kvw) + F * l * bh * t, A * l * n * (qw + 2 * kvw));
  } else {  // dP, dV, dQ, dK: g calls each; dV and dK accumulate (reading the destination) after the first
    add("attention", Bw, (4 * g + 1) * l, l * bh * 8 * t * t * dk,
        l * (bh * scaled * 2 * t * dk + shared * 2 * t * dk) + bh * (4 + 3 * capped) * visible,
        A * (l * (bh * (2 * t * dk + (t * t + t * dk) + 2 * (t * t + t * dk)) + shared * 2 * t * dk) +
             bh * (2 + capped) * visible),
        A * l * bh * (2 * t * t + 3 * t * dk));
  }
  // The activation, gated (act(a)·b) or alone, N·F elements per layer, in A. FLOPs per element as the kernels
  // execute them: silu x/(1+e^−x) 4; gelu ½x(1+erf(x/√2)) 5; gelu_tanh ½x(1+tanh(√(2/π)(x+0.044715x³))) 9; gated +1.
  // Backward: dy·act'(x) — silu 9, gelu 11 (Φ 4, φ 4, Φ + xφ 2, ·dy), gelu_tanh 18 (the inner value 6, its
  // derivative 3, ½(1+t) + ½x(1−t²)·u' 8, ·dy); gated: the value from the derivative's work (one multiply, in place
  // of ·dy) and db, dv, da: 3 more.
  const Activation act = ffn_activation(c.ffn);
  const int64_t act_fwd = act == Activation::silu ? 4 : act == Activation::gelu ? 5 : 9;
  const int64_t act_bwd = act == Activation::silu ? 9 : act == Activation::gelu ? 11 : 18;
  const char* act_op = act == Activation::silu ? (gated ? "swiglu" : "silu") : (gated ? "geglu" : "gelu");
  if (gated)
    add(act_op, Bw, l, 0, l * (act_bwd + 3) * n * f, A * l * 3 * n * f, A * l * 2 * n * f);
  else
    add(act_op, Bw, l, 0, l * act_bwd * n * f, A * l * 2 * n * f, A * l * n * f);
  const CheckedInt block_weights = l * (2 * d * qw + 2 * d * kvw + (ffn_in + 1) * f * d);  // all blocks' matmul weights
  // Every block's forward under `phase`: forward, or recompute (recompute = full re-runs each block in backward,
  // amp-bf16's weight casts included: the copies were dropped with the block).
  // RoPE: cos and sin tables (T × d_k/2 each: 3 FLOPs an entry, 2 per inverse frequency) once per step; every layer
  // rotates q (H heads) and k (KV heads) in place, 3 FLOPs an element, in forward and again (the opposite angle)
  // on their gradients in backward; each rotation reads its tensor and both tables.
  const bool rope = c.position == Position::rope;
  const CheckedInt half = dk / 2, rotated = n * (qw + kvw);
  auto add_rope = [&](Phase phase) {
    if (rope) add("rope", phase, 2 * l, 0, l * 3 * rotated, l * (A * rotated + 2 * 2 * 4 * t * half), l * A * rotated);
  };
  if (rope) add("rope", Fw, 1, 0, 3 * t * half + 2 * half, 0, 2 * 4 * t * half);
  add_rope(Bw);
  auto add_block_forward = [&](Phase phase) {
    add_rope(phase);
    add_qk_norm_forward(phase);
    add_norm_forward(phase, pre_norms, A);
    add_norm_forward(phase, post_norms, F);
    // Post norms only: each sublayer reads the residual stream itself, in the bf16 region a saved cast (2 a layer).
    if (mixed && !pre) add("cast", phase, 2 * l, 0, 0, F * 2 * l * n * d, A * 2 * l * n * d);
    e[OpKey{"linear", phase}] += linear_forward;
    add_attention_forward(phase);
    if (gated)
      add(act_op, phase, l, 0, l * (act_fwd + 1) * n * f, A * l * 2 * n * f, A * l * n * f);
    else
      add(act_op, phase, l, 0, l * act_fwd * n * f, A * l * n * f, A * l * n * f);
    add("residual", phase, 2 * l, 0, 2 * l * n * d, F * 2 * l * 2 * n * d, F * 2 * l * n * d);
    if (plan.weight_cache && !fsdp) {  // and each bias, cast with its weight
      add("cast", phase, l * (4 + ffn_in + 1) + bias_calls, 0, 0, F * (block_weights + biased_out),
          2 * (block_weights + biased_out));
    }
  };
  add_block_forward(Fw);
  if (c.recompute == Recompute::full) add_block_forward(Phase::recompute);
  if (c.recompute == Recompute::attention) add_attention_forward(Phase::recompute);
  // LM head: N×D times D×V, logits in A; backward dX (float32, into the final norm) and dW (accumulated, G).
  add("lm_head", Fw, 1, 2 * n * d * v, 0, A * (n * d + v * d), A * n * v);
  add("lm_head", Bw, 2, 4 * n * d * v, v * d, A * (2 * n * v + v * d + n * d) + G * v * d, F * n * d + G * v * d);
  // Cross-entropy over the logits buffer in place; soft-capped logits (c·tanh(z / c)) keep tanh in it and a float32
  // log-sum-exp per row, which backward reads to recompute the softmax.
  if (c.final_logit_softcapping > 0) {
    add("cross_entropy", Fw, 1, 0, n * (7 * v + 6) + 1, A * n * v + F * 2 * n, A * n * v + F * 2 * n);
    add("cross_entropy", Bw, 1, 0, n * (7 * v + 8) + 1, A * n * v + F * 2 * n, A * n * v);
  } else {
    add("cross_entropy", Fw, 1, 0, n * (5 * v + 4) + 1, A * n * v + F * 2 * n, A * n * v + F * n);
    add("cross_entropy", Bw, 1, 0, n * (v + 1) + 1, A * n * v + F * n, A * n * v);
  }
  // Casts (0 FLOPs): amp-bf16 casts every matmul weight once per step (float32 -> bf16); both mixed modes cast
  // the residual stream's gradient to bf16 twice per layer (into the ffn and attention branches).
  if (plan.weight_cache && !fsdp) add("cast", Fw, 1, 0, 0, F * v * d, 2 * v * d);  // the LM head's (blocks': above)
  if (fsdp && c.tie_embeddings) {  // the gathered float32 table, cast for the head at each use
    add("cast", Fw, 1, 0, 0, F * v * d, 2 * v * d);
    add("cast", Bw, 1, 0, 0, F * v * d, 2 * v * d);
  }
  if (mixed) add("cast", Bw, 2 * l, 0, 0, F * 2 * l * n * d, A * 2 * l * n * d);
  // Optimizer phase: zero_grad writes every gradient; AdamW reads p, g, m, v and writes p, m, v (float32),
  // or, with master weights, reads g, master, m, v and writes master, m, v and the bf16 parameter.
  const ParameterLayout layout = parameter_layout(c);  // sizes and units (checked against count_parameters)
  const CheckedInt p = count_parameters(c);
  const int64_t stage = c.zero_stage;
  const int ranks = data_parallel_ranks, rank = data_parallel_rank;
  // zero_grad: at the step's start, or (stages 2, 3) per unit as backward creates the gradients zeroed.
  if (stage >= 2)
    add("zero_grad", Bw, l + 2, 0, 0, 0, G * p);
  else
    add("zero_grad", O, 1, 0, 0, 0, G * p);
  // AdamW over every parameter, or (ZeRO, optim/zero.h) over this rank's flat range.
  const CheckedInt updated = stage >= 1 ? [&] {
    const auto [lo, hi] = owned_range(p.value(), rank, ranks);
    return CheckedInt(hi - lo);
  }() : p;
  if (plan.master_weights)
    add("adamw", O, 1, 0, (optim.weight_decay != 0.0 ? 14 : 13) * updated, (12 + G) * updated, (12 + P) * updated);
  else
    add("adamw", O, 1, 0, (optim.weight_decay != 0.0 ? 14 : 13) * updated, 4 * F * updated, 3 * F * updated);
  if (ranks > 1) {
    const Phase C = Phase::communication;
    const CheckedInt buckets = static_cast<int64_t>(gradient_buckets(c, c.bucket_bytes()).size());
    // The gradients bucket by bucket (optim/data_parallel.h): all-reduced (0), reduce-scattered (1).
    if (stage == 0) add("all_reduce", C, buckets, 0, 0, F * p, F * p);
    // Per parameter: its elements and this rank's part of them.
    const std::vector<int64_t> sizes = layout.sizes();
    std::vector<int64_t> mine;
    int64_t start = 0;
    for (int64_t size : sizes) {
      mine.push_back(parameter_split(start, size, p.value(), ranks).counts[static_cast<size_t>(rank)]);
      start += size;
    }
    const CheckedInt params = static_cast<int64_t>(sizes.size());
    CheckedInt owned = 0;
    for (int64_t m : mine) owned += m;
    if (stage == 1) add("reduce_scatter", C, buckets, 0, 0, F * p, F * owned);
    if (stage == 1 || stage == 2) add("all_gather", C, params, 0, 0, P * owned, P * p);  // after AdamW
    if (stage >= 2) add("reduce_scatter", C, params, 0, 0, F * p, F * owned);            // float32 on the wire
    if (stage == 3) {
      // Gathered per unit where used: each layer and the head twice (forward, backward); the embeddings once,
      // or, tied to the head, three times. A bf16 operand at 2 B an element.
      CheckedInt calls = 0, in = 0, out = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        const int64_t times = layout.params[i].unit != 0 ? 2 : c.tie_embeddings ? 3 : 1;
        const CheckedInt bytes = bf16_operand(layout.params[i]) ? CheckedInt(2) : P;
        calls += times;
        in += times * bytes * CheckedInt(mine[i]);
        out += times * bytes * CheckedInt(sizes[i]);
      }
      add("all_gather", C, calls, 0, 0, in, out);
    }
  }
  if (fsdp) {  // the operands' casts: every one is in a layer or the head, gathered once forward, once backward
    CheckedInt calls = 0, elements = 0, start = 0;
    for (const ParamSpec& ps : layout.params) {
      const int64_t mine =
          ranks > 1 ? parameter_split(start.value(), ps.numel(), p.value(), ranks).counts[static_cast<size_t>(rank)]
                    : ps.numel();
      start += ps.numel();
      if (!bf16_operand(ps) || mine == 0) continue;
      calls += 1;
      elements += mine;
    }
    for (Phase ph : {Fw, Bw}) add("cast", ph, calls, 0, 0, F * elements, 2 * elements);
  }
  return e;
}

}  // namespace reckon::testing_ref
