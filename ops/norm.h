// The model's normalisation, one of two ops behind one interface: rmsnorm (ops/rmsnorm.h: LLaMA, Gemma, OLMo-2) or
// layernorm (ops/layernorm.h: GPT-2, Falcon; with or without its bias). The model, the replay and the estimators
// call these; each op's kernel, counts and declared tensors stay in its own file pair.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ops/layernorm.h"
#include "ops/rmsnorm.h"
#include "runtime/enum_table.h"

namespace reckon {

enum class NormKind { rmsnorm, layernorm };
inline constexpr EnumName<NormKind> kNormKinds[] = {{NormKind::rmsnorm, "rmsnorm"}, {NormKind::layernorm, "layernorm"}};
inline const char* norm_kind_name(NormKind k) { return enum_name(kNormKinds, k); }

struct NormSaved {
  NormKind kind = NormKind::rmsnorm;
  std::string name;  // the forward's, for backward's temporaries
  RmsnormSaved rms;
  LayernormSaved ln;
};

// bias: undefined, or (D) for layernorm only (rmsnorm has none: refused). unit_offset (rmsnorm only: Gemma's RMSNorm)
// scales by 1 + weight instead of weight: op "norm_gain" first writes the float32 gain 1 + weight into a temporary
// "<name>.gain" (D), which the norm reads and frees — in backward again (the weight's gradient is the gain's: d(1 + w)
// / dw = 1).
Tensor norm_forward(NormKind kind, NormSaved& saved, const Tensor& x, const Tensor& weight, const Tensor& bias,
                    float eps, std::string_view name, DType out_dtype = DType::f32, bool unit_offset = false);
// grad_bias defined exactly when the forward had a bias; unit_offset as the forward's.
void norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_out,
                   NormSaved& saved, const Tensor& weight, bool accumulate_grad_x, bool unit_offset = false);
// The gain op of a unit-offset norm: D adds; reads D weights at their dtype, writes D floats.
OpCount norm_gain_count(int64_t d, DType weight);
TensorDecl norm_gain_tensor(int64_t d);  // "<name>.gain", (D) float32, temporary

// What the forward allocates, in order: "<name>.out", then the saved statistics ("<name>.rstd"; layernorm
// "<name>.mean" and "<name>.rstd"). A unit-offset norm's gain comes and goes before them.
std::vector<TensorDecl> norm_forward_tensors(NormKind kind, const Shape& x_shape, DType out_dtype);
// x: the input's (and its gradients') dtype — float32 but for rmsnorm over q and k (qk_norm).
OpCount norm_forward_count(NormKind kind, int64_t n, int64_t d, bool bias, DType weight, DType out,
                           DType x = DType::f32);
OpCount norm_backward_count(NormKind kind, int64_t n, int64_t d, bool bias, bool accumulate_grad_x, DType weight,
                            DType grad_weight, DType x = DType::f32);

}  // namespace reckon
