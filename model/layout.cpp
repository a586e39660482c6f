#include "model/layout.h"

#include <fmt/format.h>

#include "runtime/checked.h"

namespace reckon {

std::string ParamSpec::name() const {
  return layer < 0 ? std::string(suffix) : fmt::format("layers.{}.{}", layer, suffix);
}

Shape ParamSpec::shape() const { return rank == 1 ? Shape{dims[0]} : Shape{dims[0], dims[1]}; }

int64_t ParameterLayout::total() const {
  CheckedInt n = 0;
  for (const ParamSpec& p : params) n += p.numel();
  return n.value();
}

std::vector<int64_t> ParameterLayout::sizes() const {
  std::vector<int64_t> out;
  out.reserve(params.size());
  for (const ParamSpec& p : params) out.push_back(p.numel());
  return out;
}

int64_t ParameterLayout::role_total(ParamRole role) const {
  CheckedInt n = 0;
  for (const ParamSpec& p : params) n += p.role == role ? p.numel() : 0;
  return n.value();
}

ParameterLayout parameter_layout(const ModelShape& c) {
  ParameterLayout l;
  const int64_t v = c.vocab_size, t = c.context_length, d = c.d_model, f = c.d_ff;
  const int64_t qw = c.q_width(), kvw = c.kv_width();  // H·head_dim, KV·head_dim
  int unit = 0;
  // A matrix (rows, cols) or, with cols = 0, a vector of rows.
  auto add = [&](const char* suffix, int layer, ParamRole role, int64_t rows, int64_t cols = 0) {
    const int rank = cols == 0 ? 1 : 2;
    const int64_t c2 = cols == 0 ? 1 : cols;
    (CheckedInt(rows) * c2).value();  // numel() must fit
    l.params.push_back({suffix, layer, unit, role, rank, {rows, c2}});
    return static_cast<int>(l.params.size()) - 1;
  };
  auto open_unit = [&] { l.units.emplace_back(static_cast<int>(l.params.size()), 0); };
  auto close_unit = [&] {
    l.units.back().second = static_cast<int>(l.params.size());
    ++unit;
  };
  open_unit();
  l.tok_emb = add("tok_emb.weight", -1, ParamRole::token_embedding, v, d);
  if (c.position == Position::learned) l.pos_emb = add("pos_emb.weight", -1, ParamRole::position_embedding, t, d);
  close_unit();
  for (int i = 0; i < static_cast<int>(c.num_layers); ++i) {
    open_unit();
    LayerParamIndex x;
    if (c.pre_norms()) {
      x.attn_norm = add("attn_norm.weight", i, ParamRole::norm_gain, d);
      if (c.norm_bias) x.attn_norm_bias = add("attn_norm.bias", i, ParamRole::norm_bias, d);
    }
    x.wq = add("attn.wq.weight", i, ParamRole::attention, qw, d);
    if (c.qkv_bias()) x.bq = add("attn.wq.bias", i, ParamRole::attention, qw);
    x.wk = add("attn.wk.weight", i, ParamRole::attention, kvw, d);
    if (c.qkv_bias()) x.bk = add("attn.wk.bias", i, ParamRole::attention, kvw);
    x.wv = add("attn.wv.weight", i, ParamRole::attention, kvw, d);
    if (c.qkv_bias()) x.bv = add("attn.wv.bias", i, ParamRole::attention, kvw);
    x.wo = add("attn.wo.weight", i, ParamRole::attention, d, qw);
    if (c.o_bias()) x.bo = add("attn.wo.bias", i, ParamRole::attention, d);
    if (c.qk_norm) {
      x.q_norm = add("attn.q_norm.weight", i, ParamRole::norm_gain, qw);
      x.k_norm = add("attn.k_norm.weight", i, ParamRole::norm_gain, kvw);
    }
    if (c.post_norms()) {
      x.attn_post_norm = add("attn_post_norm.weight", i, ParamRole::norm_gain, d);
      if (c.norm_bias) x.attn_post_norm_bias = add("attn_post_norm.bias", i, ParamRole::norm_bias, d);
    }
    if (!c.parallel_block() && c.pre_norms()) {  // a parallel block's ffn reads the attention norm's output
      x.ffn_norm = add("ffn_norm.weight", i, ParamRole::norm_gain, d);
      if (c.norm_bias) x.ffn_norm_bias = add("ffn_norm.bias", i, ParamRole::norm_bias, d);
    }
    x.w1 = add("ffn.w1.weight", i, ParamRole::ffn, f, d);
    if (c.mlp_bias) x.b1 = add("ffn.w1.bias", i, ParamRole::ffn, f);
    if (ffn_gated(c.ffn)) x.w3 = add("ffn.w3.weight", i, ParamRole::ffn, f, d);
    if (ffn_gated(c.ffn) && c.mlp_bias) x.b3 = add("ffn.w3.bias", i, ParamRole::ffn, f);
    x.w2 = add("ffn.w2.weight", i, ParamRole::ffn, d, f);
    if (c.mlp_bias) x.b2 = add("ffn.w2.bias", i, ParamRole::ffn, d);
    if (c.post_norms()) {
      x.ffn_post_norm = add("ffn_post_norm.weight", i, ParamRole::norm_gain, d);
      if (c.norm_bias) x.ffn_post_norm_bias = add("ffn_post_norm.bias", i, ParamRole::norm_bias, d);
    }
    l.layers.push_back(x);
    close_unit();
  }
  open_unit();
  l.final_norm = add("final_norm.weight", -1, ParamRole::norm_gain, d);
  if (c.norm_bias) l.final_norm_bias = add("final_norm.bias", -1, ParamRole::norm_bias, d);
  l.lm_head = c.tie_embeddings ? l.tok_emb : add("lm_head.weight", -1, ParamRole::lm_head, v, d);
  close_unit();
  return l;
}

bool gathers_bf16_operands(const ModelConfig& config) { return config.dtypes().weight_cache && config.zero_stage == 3; }

bool gathered_in_bf16(const ModelConfig& config, const ParamSpec& spec) {
  return gathers_bf16_operands(config) && spec.is_matmul_weight() && spec.role != ParamRole::token_embedding;
}

}  // namespace reckon
