// AdamW with PyTorch 1.13 semantics (torch.optim.AdamW, _single_tensor_adamw), per element, step t ≥ 1:
//   p ← p · (1 − lr·wd)                         decoupled weight decay (skipped when wd = 0)
//   m ← β1·m + (1 − β1)·g
//   v ← β2·v + (1 − β2)·g·g
//   p ← p − (lr / (1 − β1ᵗ)) · m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps)      eps outside the sqrt
// The fused kernel makes one OpenMP + SIMD pass over all parameters (a chunk table spanning every tensor);
// the scalar reference beside it runs the same float operations in the same order, one element at a time.
//
// FLOPs per element as executed (sqrt and division count 1): decay 1, m 3, v 4, denominator 3 (sqrt, /, +),
// update 3 (/, ·, −) = 14, or 13 with wd = 0. Bytes per element: reads p, g, m, v; writes p, m, v = 28.
// m and v ("<param>.exp_avg", "<param>.exp_avg_sq", category optimizer_state) are allocated, zeroed, at
// the first step, as PyTorch does.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/transformer.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// The per-step constants, computed once per step in double and rounded to float.
struct AdamWStep {
  float decay;  // 1 − lr·wd
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;  // lr / (1 − β1ᵗ)
  float bc2_sqrt;   // sqrt(1 − β2ᵗ)
  float eps;
  bool apply_decay;  // wd ≠ 0
};
AdamWStep adamw_step_constants(const AdamWConfig& config, int64_t step);

// Kernels on n elements: p, m, v updated in place from g.
void adamw_update_fused(float* p, float* m, float* v, const float* g, int64_t n, const AdamWStep& s);
void adamw_update_reference(float* p, float* m, float* v, const float* g, int64_t n, const AdamWStep& s);

// Master-weights kernels (mixed precision): the optimizer owns the float32 master weights and m, v;
// the model's working copy is the bf16 parameter. Per element: the same AdamW update on the master (g read as
// float32 or widened exactly from bf16), then param = bf16(master), round to nearest even. One pass: reads g,
// master, m, v; writes master, m, v and the bf16 param. The fused kernel is one SIMD loop over all of it; the
// reference runs element by element. Bit-identical to each other, and
// the master equals adamw_update_reference on the widened gradient.
// Grad = float or bf16 (instantiated for both in adamw.cpp).
template <typename Grad>
void adamw_update_master_fused(float* master, float* m, float* v, const Grad* g, bf16* param, int64_t n,
                               const AdamWStep& s);
template <typename Grad>
void adamw_update_master_reference(float* master, float* m, float* v, const Grad* g, bf16* param, int64_t n,
                                   const AdamWStep& s);

int64_t adamw_flops_per_element(const AdamWConfig& config);
OpCount adamw_count(int64_t n, const AdamWConfig& config);
// Master weights: the same FLOPs (the bf16 rounding is not counted, as a cast); bytes read 12 + size(grad),
// written 12 + 2 per element (14 + 14 = 28 B with bf16 gradients, 16 + 14 = 30 B with float32 ones).
OpCount adamw_master_count(int64_t n, const AdamWConfig& config, DType grad_dtype);

class AdamW {
 public:
  AdamW(std::vector<Parameter>& params, const AdamWConfig& config);
  // One step over every parameter (allocates m and v at the first call). Records op "adamw".
  void step();
  int64_t steps_taken() const { return step_; }
  const AdamWConfig& config() const { return config_; }
  // Checkpoints: m and v of every parameter by name ("<param>.exp_avg", "<param>.exp_avg_sq"), created (zeros)
  // if the optimizer has not stepped yet; set_steps_taken makes a restored optimizer continue its bias
  // correction where the saved one stopped.
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  void set_steps_taken(int64_t steps) { step_ = steps; }
  // exp_avg / exp_avg_sq of parameter i (undefined before the first step).
  const Tensor& exp_avg(size_t i) const { return m_[i]; }
  const Tensor& exp_avg_sq(size_t i) const { return v_[i]; }

 private:
  void create_state();
  struct Chunk {
    float *p, *m, *v;
    const float* g;
    int64_t n;
  };
  std::vector<Parameter>& params_;
  AdamWConfig config_;
  std::vector<Tensor> m_, v_;
  std::vector<Chunk> chunks_;
  int64_t step_ = 0;
  int64_t num_elements_ = 0;
};

// Mixed precision's optimizer ("master weights"): each parameter's value is the model's bf16 working copy and
// its gradient is bf16 (the ZeRO paper's 2 + 2 + 12 = 16 B per parameter) or float32 (Megatron's 2 + 4 + 12 =
// 18 B). At the first step it allocates, per parameter, float32 "<name>.master" (the widened bf16 value, exact),
// "<name>.exp_avg" and "<name>.exp_avg_sq" (zeros), all category optimizer_state; each step runs the fused
// master-weights kernel over 64 K-element chunks on every thread and writes the bf16 values. Records op
// "adamw" in phase optimizer with adamw_master_count.
class AdamWMasterWeights {
 public:
  // Throws std::invalid_argument naming the parameter if a value is not bf16 or a gradient not bf16 or float32
  // (all gradients one dtype).
  AdamWMasterWeights(std::vector<Parameter>& params, const AdamWConfig& config);
  void step();
  int64_t steps_taken() const { return step_; }
  const Tensor& master(size_t i) const { return master_[i]; }
  const Tensor& exp_avg(size_t i) const { return m_[i]; }
  const Tensor& exp_avg_sq(size_t i) const { return v_[i]; }
  // Checkpoints: master, m and v of every parameter by name (see AdamW::state_tensors).
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  void set_steps_taken(int64_t steps) { step_ = steps; }

 private:
  void create_state();
  std::vector<Parameter>& params_;
  AdamWConfig config_;
  DType grad_dtype_ = DType::bf16;
  std::vector<Tensor> master_, m_, v_;
  int64_t step_ = 0;
  int64_t num_elements_ = 0;
};

}  // namespace reckon
