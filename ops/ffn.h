// Position-wise feed-forward, two kinds:
//   swiglu:   out = (silu(h·W1ᵀ) ⊙ (h·W3ᵀ)) · W2ᵀ      W1, W3 (F, D), W2 (D, F)
//   silu_mlp: out = silu(h·W1ᵀ) · W2ᵀ                 W1 (F, D), W2 (D, F)
//   N = rows (B*T), D = d_model, F = d_ff.
//
// dtypes: h, the weights, the saved tensors and grad_out have the "activation dtype" (float32, or bf16 in
// mixed precision); out and grad_h are float32 (they meet the float32 residual stream); grad weights have the
// gradients' dtype.
// Saved for backward (activation, "<name>.…"):
//   swiglu:   h (reference), w1_out (N, F), w3_out (N, F), gated (N, F)  = 3·N·F new floats
//   silu_mlp: h (reference), w1_out (N, F), silu_out (N, F)              = 2·N·F new floats
// The output (N, D) is allocated as temporary "<name>.out": the caller adds it to the residual stream and
// drops it. Backward allocates temporaries "<name>.grad_act" (N, F), then "<name>.grad_w1_out" (and, for
// swiglu, "<name>.grad_w3_out"), and frees each saved tensor as soon as it has been used.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ops/linear.h"
#include "runtime/enum_table.h"
#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

enum class FfnKind { swiglu, silu_mlp };
inline constexpr EnumName<FfnKind> kFfnKinds[] = {{FfnKind::swiglu, "swiglu"}, {FfnKind::silu_mlp, "silu_mlp"}};
inline const char* ffn_kind_name(FfnKind kind) { return enum_name(kFfnKinds, kind); }

struct FfnSaved {
  LinearSaved w1, w3, w2;  // inputs of the three linears (w2's input is the gated / silu activation)
  Tensor w1_out, w3_out;   // pre-activation values the gate / silu backward needs
  FfnKind kind = FfnKind::swiglu;
  std::string name;
};

// What each direction allocates (runtime/contract.h), for h of shape (…, D) and d_ff = F: forward "<name>.w1_out",
// "<name>.w3_out" (swiglu), the gate "<name>.gated" / "<name>.silu_out" (each (…, F) in h's dtype, activation;
// saved) and "<name>.out" ((…, D) float32, temporary category; output); backward "<name>.grad_act",
// "<name>.grad_w1_out" and "<name>.grad_w3_out" (swiglu) ((…, F) in h's dtype; temporary).
struct FfnForwardTensors {
  TensorDecl w1_out;
  std::optional<TensorDecl> w3_out;
  TensorDecl act, out;
};
struct FfnBackwardTensors {
  TensorDecl grad_act, grad_w1_out;
  std::optional<TensorDecl> grad_w3_out;
};
FfnForwardTensors ffn_forward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind);
FfnBackwardTensors ffn_backward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind);

// w3 is ignored (may be undefined) for silu_mlp. The saved tensors take h's dtype; out is float32.
Tensor ffn_forward(FfnSaved& saved, const Tensor& h, const Tensor& w1, const Tensor& w3, const Tensor& w2, FfnKind kind,
                   std::string_view name);

// grad_h (N, D) written `=`; grad_w1, grad_w3, grad_w2 accumulated `+=` (grad_w3 unused for silu_mlp).
void ffn_backward(const Tensor& grad_h, const Tensor& grad_w1, const Tensor& grad_w3, const Tensor& grad_w2,
                  const Tensor& grad_out, FfnSaved& saved, const Tensor& w1, const Tensor& w3, const Tensor& w2);

}  // namespace reckon
