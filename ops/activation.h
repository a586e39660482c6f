// The MLP's activations, elementwise, plain or gated.   n = number of elements.
//   silu(x)      = x · σ(x) = x / (1 + exp(−x))                                  (SwiGLU, LLaMA's MLP)
//   gelu(x)      = x · Φ(x) = ½ x (1 + erf(x / √2))                              (exact: nn.GELU(), Falcon)
//   gelu_tanh(x) = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))                      (nn.GELU(approximate="tanh"):
//                                                     Hugging Face's gelu_new and gelu_pytorch_tanh, GPT-2, Gemma-2)
//   gated:  out = act(a) ⊙ b                                                     (swiglu = silu gated, geglu = gelu)
// Storage is float32 or bf16 (mixed precision's bf16 region); arithmetic is float32 either way: bf16 inputs
// are widened exactly, outputs rounded once to nearest even. exp, erf and tanh are vectorisable (simd_math.h) except
// erf (libm's erff: GCC vectorises no erf without -ffast-math).
// FLOPs per element as the loops execute them (exp, erf, tanh and division count 1 each), from three per-activation
// figures — value v (the forward), derivative d alone, and both together:
//                  v    d    v and d           plain fwd = v   plain bwd = d + 1 (·dy)
//   silu           4    8    9                 gated fwd = v + 1 (·b)
//   gelu           5   10   11                 gated bwd = (v and d) + 3 (db = dy·v, dv = dy·b, da = dv·d)
//   gelu_tanh      9   17   18
// (silu: plain 4 / 9, gated 5 / 12.) Bytes: each element read or written at its dtype's size (4 or 2).
#pragma once

#include <cstdint>

#include "runtime/counters.h"
#include "runtime/enum_table.h"
#include "runtime/tensor.h"

namespace reckon {

enum class Activation { silu, gelu, gelu_tanh };
inline constexpr EnumName<Activation> kActivations[] = {
    {Activation::silu, "silu"}, {Activation::gelu, "gelu"}, {Activation::gelu_tanh, "gelu_tanh"}};
inline const char* activation_name(Activation a) { return enum_name(kActivations, a); }
// The op the counters record it under: "silu" / "gelu" plain (gelu_tanh too), "swiglu" / "geglu" gated.
const char* activation_op_name(Activation a, bool gated);

// All tensors one dtype (float32 or bf16), contiguous, with equal element counts; each writes `=`.
void activation_forward(Activation a, const Tensor& out, const Tensor& x);
void activation_backward(Activation a, const Tensor& grad_x, const Tensor& grad_out, const Tensor& x);
void gated_activation_forward(Activation a, const Tensor& out, const Tensor& gate, const Tensor& up);
void gated_activation_backward(Activation a, const Tensor& grad_gate, const Tensor& grad_up, const Tensor& grad_out,
                               const Tensor& gate, const Tensor& up);

OpCount activation_forward_count(Activation a, int64_t n, DType dtype = DType::f32);
OpCount activation_backward_count(Activation a, int64_t n, DType dtype = DType::f32);
OpCount gated_activation_forward_count(Activation a, int64_t n, DType dtype = DType::f32);
OpCount gated_activation_backward_count(Activation a, int64_t n, DType dtype = DType::f32);

}  // namespace reckon
