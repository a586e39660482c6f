// The pre-norm transformer LM, on reckon's ops:
//   x = tok_emb[tokens] (+ pos_emb[t])
//   for each layer:  x = x + wo · attention(wq·n, wk·n, wv·n),  n = norm(x)
//                    x = x + ffn(norm(x))                         (ops/ffn.h: gated or plain, silu or gelu)
//   logits = lm_head · norm(x)  (lm_head = tok_emb when tied);  loss = cross_entropy(logits, targets)
// norm: rmsnorm or layernorm (ops/norm.h, config field `norm`, with or without LayerNorm's bias).
// Parameters are named like PyTorch state-dict keys (tok_emb.weight, layers.0.attn.wq.weight, …) and
// initialised deterministically from the seed: N(0, 0.02²) for matrices, ones for norm gains, zeros for biases.
// Each parameter has a gradient tensor "<name>.grad" (category gradient) from construction on; gradients
// accumulate (`+=`) and zero_grad() sets them to 0, as PyTorch's zero_grad(set_to_none=False).
// Precision (model/precision.h, config field `precision`): parameters and gradients take the plan's dtypes
// (bf16 values are the float32 initial values rounded: the same seed gives the same model in every
// precision); the activations of the bf16 region are bf16 in mixed modes. amp-bf16 casts each matmul weight to
// "<name>.bf16" (category parameter, op cast) at its first use in forward and frees the copy after its last use
// in backward — PyTorch autocast's weight-cast cache, whose copies autograd keeps alive for backward. At zero_stage 3
// amp-bf16 follows FSDP's MixedPrecision(param_dtype=bf16) instead: the hooks gather each unit's matmul weights in bf16
// for its forward and again for its backward, and free them with the unit (model/layout.h gathered_in_bf16).
// Recompute (config field `recompute`, model/config.h): `attention` frees the attention core's saved tensors
// beyond q, k, v in forward and re-runs the core before its backward; `full` keeps only each block's input
// (and drops the block's bf16 weight copies) and re-runs the block's forward before its backward. Re-run ops
// count under Phase::recompute.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/layout.h"
#include "ops/attention.h"
#include "ops/flash_attention.h"
#include "ops/cross_entropy.h"
#include "ops/ffn.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "runtime/tensor.h"

namespace reckon {

struct Parameter {
  Parameter(std::string name_, Tensor value_, Tensor grad_)
      : name(std::move(name_)),
        value(std::move(value_)),
        grad(std::move(grad_)),
        shape(value.shape()),
        numel(value.numel()),
        dtype(value.dtype()),
        grad_dtype(grad.dtype()) {}
  std::string name;
  Tensor value;  // undefined between uses under zero_stage 3 (optim/zero.h holds this rank's shard)
  Tensor grad;   // undefined outside backward under zero_stage 2 and 3 (optim/zero.h holds the shard)
  Shape shape;
  int64_t numel = 0;
  DType dtype = DType::f32, grad_dtype = DType::f32;
};

// Sharded data parallelism (optim/zero.h, zero_stage 2 and 3) acts at the granularity of units: runs of
// consecutive parameters used together. Unit 0 = the embeddings (tok_emb, pos_emb), unit 1 + i = layer i,
// unit L + 1 = the head (final_norm, lm_head when untied; a tied head uses unit 0's tok_emb). The model calls:
//   gather(u)       before it reads unit u's values (forward, and again in backward), release(u) after;
//   create_grads(u) before backward writes unit u's gradients, reduce_grads(u) once they are complete
//                   (tied: tok_emb's gradient is complete only after the embedding's backward, unit 0 last).
struct ParameterHooks {
  virtual ~ParameterHooks() = default;
  virtual void gather(int unit) = 0;
  virtual void release(int unit) = 0;
  virtual void create_grads(int unit) = 0;
  virtual void reduce_grads(int unit) = 0;
};

class Transformer {
 public:
  // Validates the shape fields of `config` and allocates parameters and gradients.
  Transformer(const ModelConfig& config, uint64_t seed);

  // tokens, targets: int32 (B, T) with B = batch_size, T ≤ context_length. Runs the forward pass, keeps
  // what backward needs (category activation) and returns the mean cross-entropy loss.
  double forward(const Tensor& tokens, const Tensor& targets);
  // Backpropagates the last forward's loss (d loss = 1), accumulating into every parameter's grad and
  // freeing each saved tensor as soon as it has been used. micro_batches = K > 1: the loss differentiated is the
  // mean over K such forwards (gradient accumulation), so this one's gradients are 1/K of its own loss's.
  void backward(int64_t micro_batches = 1);
  void zero_grad();

  std::vector<Parameter>& parameters() { return params_; }
  // Unit u's parameters are [units()[u].first, units()[u].second) (see ParameterHooks).
  std::vector<std::pair<int, int>> units() const;
  // Hooks called at unit boundaries (nullptr: none, every parameter and gradient always present).
  void set_hooks(ParameterHooks* hooks) { hooks_ = hooks; }
  // FSDP's mixed precision (model/layout.h gathered_in_bf16): the bf16 matmul operand of parameter `index`, which
  // the ZeRO-3 hooks gather here before the unit runs and free after; the model reads it as it is.
  Tensor& gathered_weight(int index) { return weight_cache_[static_cast<size_t>(index)]; }
  const std::vector<Parameter>& parameters() const { return params_; }
  int64_t num_parameters() const;
  const ModelConfig& config() const { return config_; }
  const ParameterLayout& layout() const { return layout_; }

 private:
  struct LayerSaved {
    NormSaved attn_norm, ffn_norm;
    LinearSaved wq, wk, wv, wo;
    AttentionSaved attn;        // attention = naive
    FlashAttentionSaved flash;  // attention = flash
    FfnSaved ffn;
    NormSaved attn_post_norm, ffn_post_norm;  // norm_placement post, sandwich: their inputs are the sublayers' outputs
    NormSaved q_norm, k_norm;                 // qk_norm: their inputs are the q and k projections
  };
  int add_param(const std::string& name, const Shape& shape);
  const Tensor& w(int index) const { return params_[static_cast<size_t>(index)].value; }
  const Tensor& g(int index) const { return params_[static_cast<size_t>(index)].grad; }
  // A parameter that may be absent (index -1: an undefined tensor), and its gradient: LayerNorm's β.
  Tensor w_or_none(int index) const { return index >= 0 ? w(index) : Tensor(); }
  Tensor g_or_none(int index) const { return index >= 0 ? g(index) : Tensor(); }
  // The weight operand of a matmul: the parameter itself, or (amp-bf16) its cached bf16 copy, cast here at the
  // first use of the step. release_matmul_weight drops the copy after its last use in backward.
  const Tensor& matmul_weight(int index);
  void release_matmul_weight(int index);
  // A linear's bias operand (matmul_weight of it; undefined when the layer has none, index -1), its gradient, and the
  // release of its bf16 copy (with its weight's, after the weight's backward).
  Tensor bias(int index) { return index >= 0 ? matmul_weight(index) : Tensor(); }
  Tensor grad_bias(int index) const { return index >= 0 ? g(index) : Tensor(); }
  void release_bias(int index) {
    if (index >= 0) release_matmul_weight(index);
  }
  // One block: x (B, T, D) float32 in, the block's output out; saves into saved_[i]. Run by forward, and again
  // by backward under recompute = full.
  Tensor block_forward(size_t i, const Tensor& x);
  // The attention core (naive or flash) of block s; recompute = attention drops what it saved beyond q, k, v
  // in forward and re-runs it just before its backward.
  Tensor attention_core_forward(LayerSaved& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                const AttentionScores& scores, const std::string& name);
  void drop_attention_core(LayerSaved& s);
  void recompute_attention_core(LayerSaved& s, const AttentionScores& scores, const std::string& name);
  void release_block_weights(size_t i);
  // x as the bf16 region's dtype: x itself when it already has it, else a cast copy (temporary `name`).
  Tensor to_act(const Tensor& x, const std::string& name) const;
  // A sublayer's output gradient: grad_y itself, or (post norms) the gradient through its post norm, into a new
  // float32 temporary `name`.
  Tensor post_norm_backward(const Tensor& grad_y, NormSaved& saved, int weight, int beta, const std::string& name);
  // qk_norm's backward over q or k: the gradient through the norm into a new temporary `name` (q's dtype); grad_y as
  // it is without qk_norm.
  Tensor qk_norm_backward(const Tensor& grad_y, NormSaved& saved, int weight, const std::string& name);
  // x in the bf16 region's dtype for a linear that saves it (activation; x itself when it already is).
  Tensor to_saved_act(const Tensor& x, const std::string& name) const;

  // The hooks at unit boundaries; unit 0 is also the head's when the embeddings are tied.
  void gather(int unit) {
    if (hooks_) hooks_->gather(unit);
  }
  void release(int unit) {
    if (hooks_) hooks_->release(unit);
  }
  void gather_head();
  void release_head();

  ModelConfig config_;
  DTypePlan dtypes_;
  ParameterHooks* hooks_ = nullptr;
  std::vector<Parameter> params_;
  std::vector<Tensor> weight_cache_;  // amp-bf16: bf16 copies, by parameter index
  std::vector<bool> gathered_bf16_;   // per parameter: its bf16 copy is gathered by the hooks (FSDP mixed precision)
  bool fsdp_bf16_ = false;            // any parameter is
  ParameterLayout layout_;            // model/layout.h: params_[i] is layout_.params[i]

  // Saved by the last forward, consumed by backward.
  std::vector<LayerSaved> saved_;
  std::vector<Tensor> block_input_;  // recompute = full: each block's input, all that forward keeps of it
  Tensor tokens_;
  RopeTables rope_;  // position = rope: cos and sin, from forward's start to the end of the last block's backward
  NormSaved final_norm_saved_;
  LinearSaved lm_head_saved_;
  CrossEntropySaved ce_saved_;
  int64_t batch_ = 0, seq_ = 0;
};

}  // namespace reckon
