// SiLU and the SwiGLU gate, elementwise.   n = number of elements.
//   silu(x) = x · σ(x) = x / (1 + exp(−x))
//   swiglu gate: out = silu(a) ⊙ b
// FLOPs per element as the loops execute them (exp and division count 1 each):
//   silu forward 4 (negate, exp, add, divide)            silu backward 9 (σ: 4; σ(1 + x(1−σ)): 4; ·dy: 1)
//   gate forward 5 (silu: 4, ·b: 1)                      gate backward 12 (σ: 4; silu: 1; db: 1; dsilu: 1;
//                                                                           σ(1 + a(1−σ)): 4; da: 1)
#pragma once

#include <cstdint>

#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// Kernels, llm.c style: outputs first, then inputs, then the size. All write `=`.
void silu_forward(float* out, const float* x, int64_t n);
void silu_backward(float* grad_x, const float* grad_out, const float* x, int64_t n);
void swiglu_gate_forward(float* out, const float* a, const float* b, int64_t n);
void swiglu_gate_backward(float* grad_a, float* grad_b, const float* grad_out, const float* a, const float* b,
                          int64_t n);

// Tensor versions: check shapes, run the kernel, record counts under op "silu" / "swiglu".
void silu_forward(const Tensor& out, const Tensor& x);
void silu_backward(const Tensor& grad_x, const Tensor& grad_out, const Tensor& x);
void swiglu_gate_forward(const Tensor& out, const Tensor& a, const Tensor& b);
void swiglu_gate_backward(const Tensor& grad_a, const Tensor& grad_b, const Tensor& grad_out, const Tensor& a,
                          const Tensor& b);

OpCount silu_forward_count(int64_t n);
OpCount silu_backward_count(int64_t n);
OpCount swiglu_gate_forward_count(int64_t n);
OpCount swiglu_gate_backward_count(int64_t n);

}  // namespace reckon
