// Position-wise feed-forward, gated or plain, with one of the activations of ops/activation.h:
//   gated (swiglu, geglu, geglu_tanh):          out = (act(h·W1ᵀ + b1) ⊙ (h·W3ᵀ + b3)) · W2ᵀ + b2
//                                               W1, W3 (F, D), W2 (D, F): LLaMA's gate_proj, up_proj, down_proj
//   plain (silu_mlp, gelu_mlp, gelu_tanh_mlp):  out = act(h·W1ᵀ + b1) · W2ᵀ + b2     W1 (F, D), W2 (D, F): GPT-2's
//                                               c_fc and c_proj, Falcon's dense_h_to_4h and dense_4h_to_h
//   act: silu (swiglu, silu_mlp), gelu exact (geglu, gelu_mlp), gelu_tanh (geglu_tanh: Gemma-2; gelu_tanh_mlp:
//   GPT-2). Biases b1, b3 (F) and b2 (D) are optional (nn.Linear's bias; Hugging Face's mlp_bias).
//   N = rows (B*T), D = d_model, F = d_ff.
//
// dtypes: h, the weights, the saved tensors and grad_out have the "activation dtype" (float32, or bf16 in
// mixed precision); out and grad_h are float32 (they meet the float32 residual stream); grad weights have the
// gradients' dtype.
// Saved for backward (activation, "<name>.…"):
//   gated: h (reference), w1_out (N, F), w3_out (N, F), gated (N, F)              = 3·N·F new floats
//   plain: h (reference), w1_out (N, F), silu_out / gelu_out (N, F)               = 2·N·F new floats
// The output (N, D) is allocated as temporary "<name>.out": the caller adds it to the residual stream and
// drops it. Backward allocates temporaries "<name>.grad_act" (N, F), then "<name>.grad_w1_out" (and, gated,
// "<name>.grad_w3_out"), and frees each saved tensor as soon as it has been used.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ops/activation.h"
#include "ops/linear.h"
#include "runtime/enum_table.h"
#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

enum class FfnKind { swiglu, silu_mlp, geglu, geglu_tanh, gelu_mlp, gelu_tanh_mlp };
inline constexpr EnumName<FfnKind> kFfnKinds[] = {
    {FfnKind::swiglu, "swiglu"},         {FfnKind::silu_mlp, "silu_mlp"}, {FfnKind::geglu, "geglu"},
    {FfnKind::geglu_tanh, "geglu_tanh"}, {FfnKind::gelu_mlp, "gelu_mlp"}, {FfnKind::gelu_tanh_mlp, "gelu_tanh_mlp"}};
inline const char* ffn_kind_name(FfnKind kind) { return enum_name(kFfnKinds, kind); }
// Gated kinds have W3 (three matrices); the activation applied to h·W1ᵀ.
inline bool ffn_gated(FfnKind k) { return k == FfnKind::swiglu || k == FfnKind::geglu || k == FfnKind::geglu_tanh; }
inline Activation ffn_activation(FfnKind k) {
  switch (k) {
    case FfnKind::swiglu:
    case FfnKind::silu_mlp:
      return Activation::silu;
    case FfnKind::geglu:
    case FfnKind::gelu_mlp:
      return Activation::gelu;
    case FfnKind::geglu_tanh:
    case FfnKind::gelu_tanh_mlp:
      return Activation::gelu_tanh;
  }
  return Activation::silu;
}

// The operands of one FFN: the three weights (w3 undefined for plain kinds) and the optional biases (undefined =
// none). The same struct carries their gradients in backward.
struct FfnWeights {
  Tensor w1, w3, w2, b1, b3, b2;
};

struct FfnSaved {
  LinearSaved w1, w3, w2;  // inputs of the three linears (w2's input is the gated / silu activation)
  Tensor w1_out, w3_out;   // pre-activation values the gate / silu backward needs
  FfnKind kind = FfnKind::swiglu;
  std::string name;
};

// What each direction allocates (runtime/contract.h), for h of shape (…, D) and d_ff = F: forward "<name>.w1_out",
// "<name>.w3_out" (gated), the activation "<name>.gated" / "<name>.silu_out" / "<name>.gelu_out" (each (…, F) in h's
// dtype, activation; saved) and "<name>.out" ((…, D) float32, temporary category; output); backward "<name>.grad_act",
// "<name>.grad_w1_out" and "<name>.grad_w3_out" (gated) ((…, F) in h's dtype; temporary).
struct FfnForwardTensors {
  TensorDecl w1_out;
  std::optional<TensorDecl> w3_out;
  TensorDecl act, out;
};
struct FfnBackwardTensors {
  TensorDecl grad_act, grad_w1_out;
  std::optional<TensorDecl> grad_w3_out;
};
// out_category: temporary (the caller adds the output to the residual stream and drops it) or activation (a norm after
// the ffn saves it: post-sublayer norms).
FfnForwardTensors ffn_forward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind,
                                      Category out_category = Category::temporary);
FfnBackwardTensors ffn_backward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind);

// w.w3 and w.b3 are ignored (may be undefined) for plain kinds. The saved tensors take h's dtype; out is float32.
Tensor ffn_forward(FfnSaved& saved, const Tensor& h, const FfnWeights& w, FfnKind kind, std::string_view name,
                   Category out_category = Category::temporary);

// grad_h (N, D) written `=` (or `+=` with accumulate_grad_h: the residual stream's gradient, when no norm is before
// the ffn); every defined gradient in `grad` accumulated `+=` (the biases' where the forward had
// them: grad.bX must be defined exactly when w.bX is).
void ffn_backward(const Tensor& grad_h, const FfnWeights& grad, const Tensor& grad_out, FfnSaved& saved,
                  const FfnWeights& w, bool accumulate_grad_h = false);

}  // namespace reckon
