#include "model/transformer.h"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "ops/cast.h"
#include "ops/embedding.h"
#include "ops/residual.h"
#include "runtime/check.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "runtime/random.h"

namespace reckon {

namespace {
constexpr double kInitStd = 0.02;
}

int Transformer::add_param(const std::string& name, const Shape& shape) {
  params_.push_back(Parameter{name, Tensor::empty(shape, Category::parameter, name, dtypes_.param),
                              Tensor::zeros(shape, Category::gradient, name + ".grad", dtypes_.grad)});
  return static_cast<int>(params_.size()) - 1;
}

const Tensor& Transformer::matmul_weight(int index) {
  if (!dtypes_.weight_cache) return w(index);
  Tensor& copy = weight_cache_[static_cast<size_t>(index)];
  if (!copy.defined()) {
    if (gathered_bf16_[static_cast<size_t>(index)]) {  // the hooks gather it: a read outside the unit is a bug
      throw std::logic_error(
          fmt::format("matmul_weight: {} read outside its unit's gather", params_[static_cast<size_t>(index)].name));
    }
    copy = cast(w(index), DType::bf16, Category::parameter, params_[static_cast<size_t>(index)].name + ".bf16");
  }
  return copy;
}

void Transformer::release_matmul_weight(int index) {
  // A gathered copy lives as long as its unit is gathered: the hooks free it.
  if (dtypes_.weight_cache && !gathered_bf16_[static_cast<size_t>(index)])
    weight_cache_[static_cast<size_t>(index)].reset();
}

Tensor Transformer::to_act(const Tensor& x, const std::string& name) const {
  return x.dtype() == dtypes_.act ? x : cast(x, dtypes_.act, Category::temporary, name);
}

Tensor Transformer::to_saved_act(const Tensor& x, const std::string& name) const {
  return x.dtype() == dtypes_.act ? x : cast(x, dtypes_.act, Category::activation, name);
}

Transformer::Transformer(const ModelConfig& config, uint64_t seed) : config_(config), dtypes_(config.dtypes()) {
  TrainConfig full;
  full.model = config;
  validate(full);
  if (dtypes_.act == DType::bf16)
    check_bf16_matmul_available(fmt::format("precision = {}", precision_name(config.precision)));
  layout_ = parameter_layout(config_);
  for (const ParamSpec& spec : layout_.params) add_param(spec.name(), spec.shape());
  // One stream in parameter order: the same seed gives the same model.
  Rng rng(seed);
  const float gain_init = config_.norm_unit_offset ? 0.0f : 1.0f;  // a unit-offset norm's gain is 1 + weight
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& value = params_[i].value;
    const bool gain = layout_.params[i].role == ParamRole::norm_gain, bias = layout_.params[i].is_bias();
    const int64_t n = value.numel();
    dispatch_floating(value.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* v = data_as<T>(value);
      for (int64_t j = 0; j < n; ++j)
        v[j] = narrow<T>(gain ? gain_init : bias ? 0.0f : static_cast<float>(kInitStd * rng.normal()));
    });
  }
  saved_.resize(static_cast<size_t>(config_.num_layers));
  block_input_.resize(static_cast<size_t>(config_.num_layers));
  weight_cache_.resize(params_.size());
  for (const ParamSpec& spec : layout_.params) gathered_bf16_.push_back(gathered_in_bf16(config_, spec));
  fsdp_bf16_ = gathers_bf16_operands(config_);
}

int64_t Transformer::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.numel;
  return n;
}

std::vector<std::pair<int, int>> Transformer::units() const { return layout_.units; }

void Transformer::gather_head() {
  gather(layout_.head_unit());
  if (config_.tie_embeddings) gather(0);
}

void Transformer::release_head() {
  // FSDP mixed precision, tied: the head's cast of the float32 table goes with the table's gather (cast again in
  // backward), as every other matmul operand goes with its unit.
  if (fsdp_bf16_ && config_.tie_embeddings) release_matmul_weight(layout_.lm_head);
  release(layout_.head_unit());
  if (config_.tie_embeddings) release(0);
}

void Transformer::zero_grad() {
  OpRecord record("zero_grad");
  int64_t n = 0;
  for (Parameter& p : params_) {
    if (!p.grad.defined()) continue;  // zero_stage 2, 3: gradients exist only in backward, created zeroed
    p.grad.zero_();
    n += p.grad.numel() * dtype_bytes(p.grad.dtype());
  }
  record.count.bytes_written = n;
}

Tensor Transformer::block_forward(size_t i, const Tensor& x) {
  const ModelConfig& c = config_;
  const LayerParamIndex& l = layout_.layers[i];
  LayerSaved& s = saved_[i];
  const std::string p = fmt::format("layers.{}.", i);
  const DType act = dtypes_.act;
  const float eps = static_cast<float>(c.norm_eps);
  const bool pre = c.pre_norms(), post = c.post_norms();
  // The attention's input: its norm of x, or (post norms only) x itself, cast into the bf16 region if need be.
  Tensor h = pre ? norm_forward(c.norm, s.attn_norm, x, w(l.attn_norm), w_or_none(l.attn_norm_bias), eps,
                                p + "attn_norm", act, c.norm_unit_offset)
                 : to_saved_act(x, p + "attn.in");
  // A sublayer's output, normalised after it (post, sandwich: the norm saves the output, an activation then).
  const Category out_category = post ? Category::activation : Category::temporary;
  auto post_norm = [&](NormSaved& saved, const Tensor& y, int weight, int beta, const char* name) {
    return norm_forward(c.norm, saved, y, w(weight), w_or_none(beta), eps, p + name, DType::f32, c.norm_unit_offset);
  };
  Tensor x_mid;
  {
    // qk_norm: each projection is saved as its norm's input, the norm's output (q's dtype) goes on as q or k.
    auto qk = [&](NormSaved& saved, const Tensor& y, int weight, const char* name) {
      return norm_forward(c.norm, saved, y, w(weight), Tensor(), eps, p + name, act, c.norm_unit_offset);
    };
    const Tensor& wq = matmul_weight(l.wq);
    Tensor q = linear_forward(s.wq, h, wq, p + (c.qk_norm ? "attn.q_proj" : "attn.q"), act, Category::activation,
                              "linear", bias(l.bq));
    if (c.qk_norm) q = qk(s.q_norm, q, l.q_norm, "attn.q_norm");
    const Tensor& wk = matmul_weight(l.wk);
    Tensor k = linear_forward(s.wk, h, wk, p + (c.qk_norm ? "attn.k_proj" : "attn.k"), act, Category::activation,
                              "linear", bias(l.bk));
    if (c.qk_norm) k = qk(s.k_norm, k, l.k_norm, "attn.k_norm");
    const Tensor& wv = matmul_weight(l.wv);
    Tensor v = linear_forward(s.wv, h, wv, p + "attn.v", act, Category::activation, "linear", bias(l.bv));
    if (c.position == Position::rope) {  // in place: attention saves the rotated q and k
      rope_forward(q, c.num_heads, rope_);
      rope_forward(k, c.kv_heads(), rope_);
    }
    Tensor ctx = attention_core_forward(s, q, k, v, c.attention_scores(static_cast<int64_t>(i)), p + "attn");
    if (c.recompute == Recompute::attention) drop_attention_core(s);
    const Tensor& wo = matmul_weight(l.wo);
    Tensor proj = linear_forward(s.wo, ctx, wo, p + "attn.out", DType::f32, out_category, "linear", bias(l.bo));
    if (post) proj = post_norm(s.attn_post_norm, proj, l.attn_post_norm, l.attn_post_norm_bias, "attn_post_norm");
    x_mid = residual_forward(x, proj, p + "attn_residual");
  }
  // Sequential: the ffn normalises x + attention; parallel: it reads the attention's norm of x (one tensor, saved by
  // both branches' linears), and x_mid is only the partial sum, gone with this call.
  Tensor h2 = c.parallel_block() ? h
              : pre ? norm_forward(c.norm, s.ffn_norm, x_mid, w(l.ffn_norm), w_or_none(l.ffn_norm_bias), eps,
                                   p + "ffn_norm", act, c.norm_unit_offset)
                    : to_saved_act(x_mid, p + "ffn.in");
  h.reset();
  const FfnWeights fw{matmul_weight(l.w1), l.w3 >= 0 ? matmul_weight(l.w3) : Tensor(),
                      matmul_weight(l.w2), bias(l.b1),
                      bias(l.b3),          bias(l.b2)};
  Tensor f = ffn_forward(s.ffn, h2, fw, c.ffn, p + "ffn", out_category);
  h2.reset();
  if (post) f = post_norm(s.ffn_post_norm, f, l.ffn_post_norm, l.ffn_post_norm_bias, "ffn_post_norm");
  return residual_forward(x_mid, f, p + "ffn_residual");
}

Tensor Transformer::attention_core_forward(LayerSaved& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                           const AttentionScores& scores, const std::string& name) {
  const int64_t h = config_.num_heads, kv = config_.kv_heads();
  return config_.attention == AttentionKind::flash ? flash_attention_forward(s.flash, q, k, v, h, kv, name, scores)
                                                   : attention_forward(s.attn, q, k, v, h, kv, name, scores);
}

void Transformer::drop_attention_core(LayerSaved& s) {
  s.attn.probs.reset();  // naive: the B·H·T² probabilities (and, soft-capped, their tanh)
  s.attn.tanh.reset();
  s.flash.lse.reset();  // flash: the log-sum-exp; its output lives on as wo's saved input
  s.flash.out.reset();
}

void Transformer::recompute_attention_core(LayerSaved& s, const AttentionScores& scores, const std::string& name) {
  if (config_.attention == AttentionKind::flash) {
    const Tensor q = s.flash.q, k = s.flash.k, v = s.flash.v;
    flash_attention_forward(s.flash, q, k, v, config_.num_heads, config_.kv_heads(), name, scores);  // out, lse again
  } else {
    const Tensor q = s.attn.q, k = s.attn.k, v = s.attn.v;
    attention_forward(s.attn, q, k, v, config_.num_heads, config_.kv_heads(), name, scores);  // probs (tanh) again
  }
}

Tensor Transformer::post_norm_backward(const Tensor& grad_y, NormSaved& saved, int weight, int beta,
                                       const std::string& name) {
  if (!config_.post_norms()) return grad_y;
  Tensor grad_in = Tensor::empty(grad_y.shape(), Category::temporary, name);
  norm_backward(grad_in, g(weight), g_or_none(beta), grad_y, saved, w(weight), false, config_.norm_unit_offset);
  return grad_in;
}

Tensor Transformer::qk_norm_backward(const Tensor& grad_y, NormSaved& saved, int weight, const std::string& name) {
  if (!config_.qk_norm) return grad_y;
  Tensor grad_in = Tensor::empty(grad_y.shape(), Category::temporary, name, grad_y.dtype());
  norm_backward(grad_in, g(weight), Tensor(), grad_y, saved, w(weight), false, config_.norm_unit_offset);
  return grad_in;
}

void Transformer::release_block_weights(size_t i) {
  const LayerParamIndex& l = layout_.layers[i];
  for (int index : {l.wq, l.bq, l.wk, l.bk, l.wv, l.bv, l.wo, l.bo, l.w1, l.b1, l.w3, l.b3, l.w2, l.b2}) {
    if (index >= 0) release_matmul_weight(index);
  }
}

double Transformer::forward(const Tensor& tokens, const Tensor& targets) {
  const ModelConfig& c = config_;
  check_arg(tokens.dtype() == DType::i32 && tokens.dim() == 2, "forward: tokens must be int32 (B, T), got {}",
            tokens.shape_str());
  check_arg(tokens.size(1) >= 1 && tokens.size(1) <= c.context_length,
            "forward: sequence length {} is outside the allowed range [1, {}] (context_length)", tokens.size(1),
            c.context_length);
  check_arg(targets.shape() == tokens.shape(), "forward: targets {} must have the tokens' shape {}",
            targets.shape_str(), tokens.shape_str());
  PhaseScope phase(Phase::forward);
  batch_ = tokens.size(0);
  seq_ = tokens.size(1);
  tokens_ = tokens;

  const DType act = dtypes_.act;
  const float eps = static_cast<float>(c.norm_eps);
  // The residual stream x is float32 in every precision; norms write the bf16 region's dtype.
  gather(0);
  Tensor x = embedding_forward(tokens, w(layout_.tok_emb), "tok_emb.out", c.embedding_scale());
  if (layout_.pos_emb >= 0) position_embedding_forward(x, w(layout_.pos_emb));
  release(0);
  if (c.position == Position::rope) rope_ = rope_tables(seq_, c.head_size(), c.rope_frequencies());
  for (size_t i = 0; i < layout_.layers.size(); ++i) {
    gather(static_cast<int>(i) + 1);
    Tensor out = block_forward(i, x);
    if (config_.recompute == Recompute::full) {
      // torch.utils.checkpoint: keep the block's input alone; what the block saved and its weights' bf16 copies
      // are dropped here and rebuilt by backward's recompute.
      block_input_[i] = x;
      saved_[i] = LayerSaved{};
      release_block_weights(i);
    }
    release(static_cast<int>(i) + 1);
    x = std::move(out);
  }
  gather_head();
  Tensor hf = norm_forward(c.norm, final_norm_saved_, x, w(layout_.final_norm), w_or_none(layout_.final_norm_bias), eps,
                           "final_norm", act, c.norm_unit_offset);
  x.reset();
  const Tensor& head = matmul_weight(layout_.lm_head);
  Tensor logits = linear_forward(lm_head_saved_, hf, head, "lm_head.logits", act, Category::activation, "lm_head");
  release_head();
  hf.reset();
  return cross_entropy_forward(ce_saved_, logits, targets, "cross_entropy",
                               static_cast<float>(c.final_logit_softcapping));
}

void Transformer::backward(int64_t micro_batches) {
  check_arg(ce_saved_.probs.defined(), "backward: no forward pass to differentiate (call forward first)");
  PhaseScope phase(Phase::backward);
  const int64_t b = batch_, t = seq_, d = config_.d_model;
  const int head_unit = layout_.head_unit();
  if (hooks_) {
    hooks_->create_grads(head_unit);
    if (config_.tie_embeddings) hooks_->create_grads(0);  // tok_emb's gradient: from the head, then the embedding
  }
  gather_head();

  check_arg(micro_batches >= 1, "backward: micro_batches {} is below 1", micro_batches);
  Tensor grad_logits = cross_entropy_backward(ce_saved_, 1.0f, micro_batches * b * t);
  Tensor grad_hf = Tensor::empty({b, t, d}, Category::temporary, "final_norm.grad_out");
  linear_backward(grad_hf, g(layout_.lm_head), grad_logits, lm_head_saved_, matmul_weight(layout_.lm_head), false,
                  "lm_head");
  release_matmul_weight(layout_.lm_head);
  grad_logits.reset();  // the logits buffer is freed here
  // The residual stream's gradient: one buffer, written by the final norm, then accumulated into by every
  // branch on the way down.
  Tensor grad_x = Tensor::empty({b, t, d}, Category::temporary, "residual.grad");
  norm_backward(grad_x, g(layout_.final_norm), g_or_none(layout_.final_norm_bias), grad_hf, final_norm_saved_,
                w(layout_.final_norm), false, config_.norm_unit_offset);
  grad_hf.reset();
  release_head();
  if (hooks_) hooks_->reduce_grads(head_unit);

  for (size_t idx = layout_.layers.size(); idx-- > 0;) {
    const LayerParamIndex& l = layout_.layers[idx];
    LayerSaved& s = saved_[idx];
    const std::string p = fmt::format("layers.{}.", idx);
    const int unit = static_cast<int>(idx) + 1;
    if (hooks_) hooks_->create_grads(unit);
    gather(unit);
    if (config_.recompute == Recompute::full) {
      // Re-run the block from its kept input: the saved tensors (and weight copies) are back, bit for bit; the
      // recomputed output is not needed.
      PhaseScope recompute(Phase::recompute);
      block_forward(idx, block_input_[idx]);
      block_input_[idx].reset();  // now held as the attention norm's saved input
    }
    // The attention norm's output gradient; a parallel block's two branches both add into it (the ffn's first).
    const bool parallel = config_.parallel_block(), pre = config_.pre_norms();
    Tensor grad_h;
    if (parallel) grad_h = Tensor::empty({b, t, d}, Category::temporary, p + "attn_norm.grad_out");
    {
      // Without a norm before the ffn its input is the residual stream: its dX adds straight into grad_x.
      Tensor grad_h2 = parallel ? grad_h
                       : pre    ? Tensor::empty({b, t, d}, Category::temporary, p + "ffn_norm.grad_out")
                                : grad_x;
      Tensor grad_f = to_act(post_norm_backward(grad_x, s.ffn_post_norm, l.ffn_post_norm, l.ffn_post_norm_bias,
                                                p + "ffn_post_norm.grad_in"),
                             p + "ffn.grad_out");  // the branch's gradient, in its dtype
      {  // the operands' handles go with this scope, before the weight copies are released
        const FfnWeights fw{matmul_weight(l.w1), l.w3 >= 0 ? matmul_weight(l.w3) : Tensor(),
                            matmul_weight(l.w2), bias(l.b1),
                            bias(l.b3),          bias(l.b2)};
        const FfnWeights fg{g(l.w1),        l.w3 >= 0 ? g(l.w3) : Tensor(), g(l.w2), grad_bias(l.b1), grad_bias(l.b3),
                            grad_bias(l.b2)};
        ffn_backward(grad_h2, fg, grad_f, s.ffn, fw, !pre && !parallel);
      }
      grad_f.reset();
      release_matmul_weight(l.w2);
      release_bias(l.b2);
      if (l.w3 >= 0) release_matmul_weight(l.w3);
      release_bias(l.b3);
      release_matmul_weight(l.w1);
      release_bias(l.b1);
      if (!parallel && pre) {
        norm_backward(grad_x, g(l.ffn_norm), g_or_none(l.ffn_norm_bias), grad_h2, s.ffn_norm, w(l.ffn_norm), true,
                      config_.norm_unit_offset);
      }
    }
    const DType act = dtypes_.act;
    const int64_t qw = config_.q_width(), kvw = config_.kv_width();
    Tensor grad_branch = post_norm_backward(grad_x, s.attn_post_norm, l.attn_post_norm, l.attn_post_norm_bias,
                                            p + "attn_post_norm.grad_in");
    Tensor grad_ctx = Tensor::empty({b, t, qw}, Category::temporary, p + "attn.grad_ctx", act);
    {
      Tensor grad_proj = to_act(grad_branch, p + "attn.grad_out");
      grad_branch.reset();
      linear_backward(grad_ctx, g(l.wo), grad_proj, s.wo, matmul_weight(l.wo), false, "linear", grad_bias(l.bo));
    }
    release_matmul_weight(l.wo);
    release_bias(l.bo);
    if (config_.recompute == Recompute::attention) {
      PhaseScope recompute(Phase::recompute);
      recompute_attention_core(s, config_.attention_scores(static_cast<int64_t>(idx)), p + "attn");
    }
    Tensor grad_q = Tensor::empty({b, t, qw}, Category::temporary, p + "attn.grad_q", act);
    Tensor grad_k = Tensor::empty({b, t, kvw}, Category::temporary, p + "attn.grad_k", act);
    Tensor grad_v = Tensor::empty({b, t, kvw}, Category::temporary, p + "attn.grad_v", act);
    if (config_.attention == AttentionKind::flash)
      flash_attention_backward(grad_q, grad_k, grad_v, grad_ctx, s.flash);
    else
      attention_backward(grad_q, grad_k, grad_v, grad_ctx, s.attn);
    grad_ctx.reset();
    if (config_.position == Position::rope) {  // the rotation's backward, in place, before the projections'
      rope_backward(grad_q, config_.num_heads, rope_);
      rope_backward(grad_k, config_.kv_heads(), rope_);
    }
    grad_q = qk_norm_backward(grad_q, s.q_norm, l.q_norm, p + "attn.q_norm.grad_in");
    grad_k = qk_norm_backward(grad_k, s.k_norm, l.k_norm, p + "attn.k_norm.grad_in");
    if (!parallel) grad_h = pre ? Tensor::empty({b, t, d}, Category::temporary, p + "attn_norm.grad_out") : grad_x;
    linear_backward(grad_h, g(l.wq), grad_q, s.wq, matmul_weight(l.wq), parallel || !pre, "linear", grad_bias(l.bq));
    release_matmul_weight(l.wq);
    release_bias(l.bq);
    grad_q.reset();
    linear_backward(grad_h, g(l.wk), grad_k, s.wk, matmul_weight(l.wk), true, "linear", grad_bias(l.bk));
    release_matmul_weight(l.wk);
    release_bias(l.bk);
    grad_k.reset();
    linear_backward(grad_h, g(l.wv), grad_v, s.wv, matmul_weight(l.wv), true, "linear", grad_bias(l.bv));
    release_matmul_weight(l.wv);
    release_bias(l.bv);
    grad_v.reset();
    if (pre) {
      norm_backward(grad_x, g(l.attn_norm), g_or_none(l.attn_norm_bias), grad_h, s.attn_norm, w(l.attn_norm), true,
                    config_.norm_unit_offset);
    }
    release(unit);
    if (hooks_) hooks_->reduce_grads(unit);
  }
  rope_ = RopeTables{};
  if (hooks_ && !config_.tie_embeddings) hooks_->create_grads(0);
  if (layout_.pos_emb >= 0) position_embedding_backward(g(layout_.pos_emb), grad_x);
  embedding_backward(g(layout_.tok_emb), grad_x, tokens_, config_.embedding_scale());
  tokens_.reset();
  if (hooks_) hooks_->reduce_grads(0);
}

}  // namespace reckon
