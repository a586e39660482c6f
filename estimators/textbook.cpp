#include "estimators/textbook.h"

#include <fmt/format.h>

#include "runtime/checked.h"

namespace reckon {

namespace {
// A row while its counts are CheckedInt arithmetic (an overflow throws SizeOverflow).
struct CheckedRow {
  std::string item;
  CheckedInt textbook_floats;
  std::string implemented;
  CheckedInt implemented_floats;
  std::string why;
};
}  // namespace

std::vector<ActivationRow> activation_comparison(const ModelConfig& c) {
  const CheckedInt b = c.batch_size, t = c.context_length, d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const CheckedInt l = c.num_layers, h = c.num_heads, btd = b * t * d, btf = b * t * f, bt = b * t;
  // The textbook (Korthikanti et al. 2022) writes every width as D; with grouped K/V heads or head_dim ≠ D/H the
  // implementation's q and context are B·T·H·head_dim, k and v B·T·KV·head_dim.
  const CheckedInt btq = bt * c.q_width(), btkv = bt * c.kv_width();
  const bool gated = ffn_gated(c.ffn), flash = c.attention == AttentionKind::flash;
  const bool ln = c.norm == NormKind::layernorm, parallel = c.parallel_block();
  const bool pre = c.pre_norms(), post = c.post_norms();
  const std::string norm = ln ? "LayerNorm" : "RMSNorm";
  const CheckedInt norms = l * c.norms_per_layer();  // in the blocks
  const bool silu = ffn_activation(c.ffn) == Activation::silu;
  const char* act = silu ? "SiLU" : "GELU";
  const std::string act_row = gated ? fmt::format("{} (gated: {})", act, silu ? "SwiGLU" : "GeGLU") : act;
  const std::vector<CheckedRow> checked = {
      parallel ? CheckedRow{norm + " outputs (1 per parallel block)", l * btd, "layers.*.attn_norm.out", l * btd,
                            "same: the input of both branches' projections"}
      : pre ? CheckedRow{norm + " outputs (2 per block)", l * 2 * btd, "layers.*.attn_norm.out, layers.*.ffn_norm.out",
                         l * 2 * btd, "same: the inputs of the projections"}
            : CheckedRow{norm + " outputs (2 per block)", l * 2 * btd, "— (norms after the sublayers)", 0,
                         "the norms' outputs are added into the residual stream; the sublayers read the stream"},
      ln ? CheckedRow{"(not listed) LayerNorm mean and 1/σ", 0, "layers.*.<each norm>.{mean,rstd}", norms * 2 * bt,
                      "LayerNorm backward needs the mean and 1/σ per row"}
         : CheckedRow{"(not listed) RMSNorm 1/rms", 0, "layers.*.<each norm>.rstd", norms * bt,
                      "RMSNorm backward needs 1/rms per row"},
      {"(not listed) " + norm + " inputs" + (pre ? "" : " and the sublayers' inputs"), 0,
       std::string(parallel ? "layer input" : "layer input, layers.*.attn_residual") +
           (post ? ", layers.*.attn.out, layers.*.ffn.out" : ""),
       (parallel ? l : 2 * l) * btd + (post ? 2 * l * btd : CheckedInt(0)),
       post ? "each norm's input x (after a sublayer: its output); the residual stream feeds the sublayers"
            : norm + " backward needs its input x (the residual stream)"},
      {"QKV projections", l * 3 * btd, "layers.*.attn.q, .k, .v", l * (btq + 2 * btkv),
       c.kv_width() == c.d_model && c.q_width() == c.d_model
           ? "same: attention backward needs Q, K, V"
           : "attention backward needs Q, K, V; k and v are KV·head_dim wide, q H·head_dim"},
      c.qk_norm ? CheckedRow{"(not listed) q/k norms", 0, "layers.*.attn.q_proj, .k_proj, .q_norm.rstd, .k_norm.rstd",
                             l * (btq + btkv + 2 * bt), "the norms over q and k need their inputs and 1/rms per row"}
                : CheckedRow{"(not listed) q/k norms", 0, "—", 0, "no qk_norm"},
      {"QᵀK (scores)", l * b * h * t * t, "—", 0,
       flash ? "flash attention: scores live one key block at a time" : "softmax runs in place over the scores buffer"},
      flash ? CheckedRow{"softmax", l * b * h * t * t, "layers.*.attn.lse (float32)", l * b * h * t,
                         "flash attention keeps one log-sum-exp per row and recomputes the scores in backward"}
            : CheckedRow{"softmax", l * b * h * t * t, "layers.*.attn.probs", l * b * h * t * t, "same"},
      {"weighted sum of values", l * btd, "layers.*.attn.ctx", l * btq, "same: the input of the output projection"},
      {"output projection", l * btd, post ? "layers.*.attn.out (in the norm inputs)" : "— (temporary)", 0,
       post ? "the norm after attention needs it" : "added into the residual stream; nothing saves it"},
      {"W1 matrix multiply", l * btf, "layers.*.ffn.w1_out", l * btf, fmt::format("same: {} backward needs it", act)},
      {gated ? "(not listed) W3 (the gate's second input)" : "(not listed) W3", 0, gated ? "layers.*.ffn.w3_out" : "—",
       gated ? l * btf : 0, gated ? "the gate's second input" : "2-matrix MLP: no W3"},
      {act_row, l * btf,
       gated  ? "layers.*.ffn.gated"
       : silu ? "layers.*.ffn.silu_out"
              : "layers.*.ffn.gelu_out",
       l * btf, "same: the input of W2"},
      {"W2 matrix multiply", l * btd, post ? "layers.*.ffn.out (in the norm inputs)" : "— (temporary)", 0,
       post ? "the norm after the ffn needs it" : "added into the residual stream; nothing saves it"},
      ln ? CheckedRow{"final LayerNorm", btd, "final_norm.out (+ .mean, .rstd, + its input)", 2 * btd + 2 * bt,
                      "output for the head; input, mean and 1/σ for the norm's backward"}
         : CheckedRow{"final RMSNorm", btd, "final_norm.out (+ .rstd, + its input)", 2 * btd + bt,
                      "output for the head; input and 1/rms for the norm's backward"},
      {"output embedding (logits)", b * t * v, "lm_head.logits", b * t * v, "same"},
      {"cross-entropy on logits", b * t * v, "— (in place)", 0,
       "softmax written over the logits buffer, then dlogits over it: one logits-sized buffer"},
      {"(not listed) the batch", 0, "batch.tokens, batch.targets (int32)", 2 * bt, "4-byte token ids and targets"},
  };
  std::vector<ActivationRow> rows;
  for (const CheckedRow& r : checked) {
    rows.push_back({r.item, r.textbook_floats.value(), r.implemented, r.implemented_floats.value(), r.why});
  }
  return rows;
}

int64_t textbook_activation_floats(const ModelConfig& c) {
  CheckedInt sum = 0;
  for (const ActivationRow& r : activation_comparison(c)) sum += r.textbook_floats;
  return sum.value();
}

}  // namespace reckon
