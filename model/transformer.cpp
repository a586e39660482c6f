#include "model/transformer.h"

#include <cstring>

#include <fmt/format.h>

#include "ops/embedding.h"
#include "ops/residual.h"
#include "runtime/check.h"
#include "runtime/counters.h"
#include "runtime/random.h"

namespace reckon {

namespace {
constexpr double kInitStd = 0.02;
}

int Transformer::add_param(const std::string& name, const Shape& shape) {
  params_.push_back(Parameter{name, Tensor::empty(shape, Category::parameter, name),
                              Tensor::zeros(shape, Category::gradient, name + ".grad")});
  return static_cast<int>(params_.size()) - 1;
}

Transformer::Transformer(const ModelConfig& config, uint64_t seed) : config_(config) {
  TrainConfig full;
  full.model = config;
  validate(full);
  const ModelConfig& c = config_;
  const int64_t d = c.d_model;
  std::vector<bool> gain;
  auto add = [&](const std::string& name, const Shape& shape, bool is_gain) {
    gain.push_back(is_gain);
    return add_param(name, shape);
  };
  tok_emb_ = add("tok_emb.weight", {c.vocab_size, d}, false);
  if (c.position == Position::learned) pos_emb_ = add("pos_emb.weight", {c.context_length, d}, false);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = fmt::format("layers.{}.", i);
    LayerParams l{};
    l.attn_norm = add(p + "attn_norm.weight", {d}, true);
    l.wq = add(p + "attn.wq.weight", {d, d}, false);
    l.wk = add(p + "attn.wk.weight", {d, d}, false);
    l.wv = add(p + "attn.wv.weight", {d, d}, false);
    l.wo = add(p + "attn.wo.weight", {d, d}, false);
    l.ffn_norm = add(p + "ffn_norm.weight", {d}, true);
    l.w1 = add(p + "ffn.w1.weight", {c.d_ff, d}, false);
    l.w3 = c.ffn == FfnKind::swiglu ? add(p + "ffn.w3.weight", {c.d_ff, d}, false) : -1;
    l.w2 = add(p + "ffn.w2.weight", {d, c.d_ff}, false);
    layers_.push_back(l);
  }
  final_norm_ = add("final_norm.weight", {d}, true);
  lm_head_ = c.tie_embeddings ? tok_emb_ : add("lm_head.weight", {c.vocab_size, d}, false);

  // One stream in parameter order: the same seed gives the same model.
  Rng rng(seed);
  for (size_t i = 0; i < params_.size(); ++i) {
    float* v = params_[i].value.data();
    const int64_t n = params_[i].value.numel();
    for (int64_t j = 0; j < n; ++j) v[j] = gain[i] ? 1.0f : static_cast<float>(kInitStd * rng.normal());
  }
  saved_.resize(static_cast<size_t>(c.num_layers));
}

int64_t Transformer::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.value.numel();
  return n;
}

void Transformer::zero_grad() {
  OpRecord record("zero_grad");
  int64_t n = 0;
  for (Parameter& p : params_) {
    std::memset(p.grad.data(), 0, static_cast<size_t>(p.grad.numel()) * sizeof(float));
    n += p.grad.numel();
  }
  record.count.bytes_written = 4 * n;
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

  Tensor x = embedding_forward(tokens, w(tok_emb_), "tok_emb.out");
  if (pos_emb_ >= 0) position_embedding_forward(x, w(pos_emb_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LayerParams& l = layers_[i];
    LayerSaved& s = saved_[i];
    const std::string p = fmt::format("layers.{}.", i);
    Tensor x_mid;
    {
      Tensor h = rmsnorm_forward(s.attn_norm, x, w(l.attn_norm), static_cast<float>(c.rmsnorm_eps), p + "attn_norm");
      Tensor q = linear_forward(s.wq, h, w(l.wq), p + "attn.q");
      Tensor k = linear_forward(s.wk, h, w(l.wk), p + "attn.k");
      Tensor v = linear_forward(s.wv, h, w(l.wv), p + "attn.v");
      Tensor ctx = attention_forward(s.attn, q, k, v, c.num_heads, p + "attn");
      Tensor proj = linear_forward(s.wo, ctx, w(l.wo), p + "attn.out", Category::temporary);
      x_mid = residual_forward(x, proj, p + "attn_residual");
    }
    Tensor h2 = rmsnorm_forward(s.ffn_norm, x_mid, w(l.ffn_norm), static_cast<float>(c.rmsnorm_eps), p + "ffn_norm");
    Tensor f = ffn_forward(s.ffn, h2, w(l.w1), l.w3 >= 0 ? w(l.w3) : Tensor(), w(l.w2), c.ffn, p + "ffn");
    h2.reset();
    x = residual_forward(x_mid, f, p + "ffn_residual");
  }
  Tensor hf = rmsnorm_forward(final_norm_saved_, x, w(final_norm_), static_cast<float>(c.rmsnorm_eps), "final_norm");
  x.reset();
  Tensor logits = linear_forward(lm_head_saved_, hf, w(lm_head_), "lm_head.logits", Category::activation, "lm_head");
  hf.reset();
  return cross_entropy_forward(ce_saved_, logits, targets, "cross_entropy");
}

void Transformer::backward() {
  check_arg(ce_saved_.probs.defined(), "backward: no forward pass to differentiate (call forward first)");
  PhaseScope phase(Phase::backward);
  const int64_t b = batch_, t = seq_, d = config_.d_model;

  Tensor grad_logits = cross_entropy_backward(ce_saved_, 1.0f);
  Tensor grad_hf = Tensor::empty({b, t, d}, Category::temporary, "final_norm.grad_out");
  linear_backward(grad_hf, g(lm_head_), grad_logits, lm_head_saved_, w(lm_head_), false, "lm_head");
  grad_logits.reset();  // the logits buffer is freed here
  // The residual stream's gradient: one buffer, written by the final norm, then accumulated into by every
  // branch on the way down.
  Tensor grad_x = Tensor::empty({b, t, d}, Category::temporary, "residual.grad");
  rmsnorm_backward(grad_x, g(final_norm_), grad_hf, final_norm_saved_, w(final_norm_), false);
  grad_hf.reset();

  for (size_t idx = layers_.size(); idx-- > 0;) {
    const LayerParams& l = layers_[idx];
    LayerSaved& s = saved_[idx];
    const std::string p = fmt::format("layers.{}.", idx);
    {
      Tensor grad_h2 = Tensor::empty({b, t, d}, Category::temporary, p + "ffn_norm.grad_out");
      ffn_backward(grad_h2, g(l.w1), l.w3 >= 0 ? g(l.w3) : Tensor(), g(l.w2), grad_x, s.ffn, w(l.w1),
                   l.w3 >= 0 ? w(l.w3) : Tensor(), w(l.w2));
      rmsnorm_backward(grad_x, g(l.ffn_norm), grad_h2, s.ffn_norm, w(l.ffn_norm), true);
    }
    Tensor grad_ctx = Tensor::empty({b, t, d}, Category::temporary, p + "attn.grad_ctx");
    linear_backward(grad_ctx, g(l.wo), grad_x, s.wo, w(l.wo), false);
    Tensor grad_q = Tensor::empty({b, t, d}, Category::temporary, p + "attn.grad_q");
    Tensor grad_k = Tensor::empty({b, t, d}, Category::temporary, p + "attn.grad_k");
    Tensor grad_v = Tensor::empty({b, t, d}, Category::temporary, p + "attn.grad_v");
    attention_backward(grad_q, grad_k, grad_v, grad_ctx, s.attn);
    grad_ctx.reset();
    Tensor grad_h = Tensor::empty({b, t, d}, Category::temporary, p + "attn_norm.grad_out");
    linear_backward(grad_h, g(l.wq), grad_q, s.wq, w(l.wq), false);
    grad_q.reset();
    linear_backward(grad_h, g(l.wk), grad_k, s.wk, w(l.wk), true);
    grad_k.reset();
    linear_backward(grad_h, g(l.wv), grad_v, s.wv, w(l.wv), true);
    grad_v.reset();
    rmsnorm_backward(grad_x, g(l.attn_norm), grad_h, s.attn_norm, w(l.attn_norm), true);
  }
  if (pos_emb_ >= 0) position_embedding_backward(g(pos_emb_), grad_x);
  embedding_backward(g(tok_emb_), grad_x, tokens_);
  tokens_.reset();
}

}  // namespace reckon
