// The model's normalisation, one of two ops behind one interface: rmsnorm (ops/rmsnorm.h: LLaMA, Gemma, OLMo-2) or
// layernorm (ops/layernorm.h: GPT-2, Falcon; with or without its bias). The model, the replay and the estimators
// call these; each op's kernel, counts and declared tensors stay in its own file pair.
#pragma once

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
  RmsnormSaved rms;
  LayernormSaved ln;
};

// bias: undefined, or (D) for layernorm only (rmsnorm has none: refused).
Tensor norm_forward(NormKind kind, NormSaved& saved, const Tensor& x, const Tensor& weight, const Tensor& bias,
                    float eps, std::string_view name, DType out_dtype = DType::f32);
// grad_bias defined exactly when the forward had a bias.
void norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_out,
                   NormSaved& saved, const Tensor& weight, bool accumulate_grad_x);

// What the forward allocates, in order: "<name>.out", then the saved statistics ("<name>.rstd"; layernorm
// "<name>.mean" and "<name>.rstd").
std::vector<TensorDecl> norm_forward_tensors(NormKind kind, const Shape& x_shape, DType out_dtype);
OpCount norm_forward_count(NormKind kind, int64_t n, int64_t d, bool bias, DType weight, DType out);
OpCount norm_backward_count(NormKind kind, int64_t n, int64_t d, bool bias, bool accumulate_grad_x, DType weight,
                            DType grad_weight);

}  // namespace reckon
