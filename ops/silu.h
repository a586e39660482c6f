// SiLU and the SwiGLU gate, elementwise.   n = number of elements.
//   silu(x) = x · σ(x) = x / (1 + exp(−x))
//   swiglu gate: out = silu(a) ⊙ b
// Storage is float32 or bf16 (mixed precision's bf16 region); arithmetic is float32 either way: bf16 inputs
// are widened exactly, outputs rounded once to nearest even.
// FLOPs per element as the loops execute them (exp and division count 1 each):
//   silu forward 4 (negate, exp, add, divide)            silu backward 9 (σ: 4; σ(1 + x(1−σ)): 4; ·dy: 1)
//   gate forward 5 (silu: 4, ·b: 1)                      gate backward 12 (σ: 4; silu: 1; db: 1; dsilu: 1;
//                                                                           σ(1 + a(1−σ)): 4; da: 1)
// Bytes: each element read or written at its dtype's size (4 or 2).
#pragma once

#include <cstdint>

#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// Kernels, llm.c style: outputs first, then inputs, then the size. All write `=`. T = float or bf16.
template <typename T>
void silu_forward(T* out, const T* x, int64_t n);
template <typename T>
void silu_backward(T* grad_x, const T* grad_out, const T* x, int64_t n);
template <typename T>
void swiglu_gate_forward(T* out, const T* a, const T* b, int64_t n);
template <typename T>
void swiglu_gate_backward(T* grad_a, T* grad_b, const T* grad_out, const T* a, const T* b, int64_t n);

// Tensor versions: all tensors one dtype (float32 or bf16); check shapes, run the kernel, record counts under
// op "silu" / "swiglu".
void silu_forward(const Tensor& out, const Tensor& x);
void silu_backward(const Tensor& grad_x, const Tensor& grad_out, const Tensor& x);
void swiglu_gate_forward(const Tensor& out, const Tensor& a, const Tensor& b);
void swiglu_gate_backward(const Tensor& grad_a, const Tensor& grad_b, const Tensor& grad_out, const Tensor& a,
                          const Tensor& b);

OpCount silu_forward_count(int64_t n, DType dtype = DType::f32);
OpCount silu_backward_count(int64_t n, DType dtype = DType::f32);
OpCount swiglu_gate_forward_count(int64_t n, DType dtype = DType::f32);
OpCount swiglu_gate_backward_count(int64_t n, DType dtype = DType::f32);

}  // namespace reckon
