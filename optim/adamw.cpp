#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

namespace {
// Elements per chunk of the fused pass: large enough to amortise scheduling, small enough that two
// threads share the work of even a small model evenly (64 K elements = 1.75 MiB of traffic).
constexpr int64_t kChunkElements = 1 << 16;
}  // namespace

AdamWStep adamw_step_constants(const AdamWConfig& c, int64_t step) {
  const double t = static_cast<double>(step);
  AdamWStep s{};
  s.decay = static_cast<float>(1.0 - c.lr * c.weight_decay);
  s.beta1 = static_cast<float>(c.beta1);
  s.one_minus_beta1 = static_cast<float>(1.0 - c.beta1);
  s.beta2 = static_cast<float>(c.beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - c.beta2);
  s.step_size = static_cast<float>(c.lr / (1.0 - std::pow(c.beta1, t)));
  s.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(c.beta2, t)));
  s.eps = static_cast<float>(c.eps);
  s.apply_decay = c.weight_decay != 0.0;
  return s;
}

int64_t adamw_flops_per_element(const AdamWConfig& config) { return config.weight_decay != 0.0 ? 14 : 13; }

OpCount adamw_count(int64_t n, const AdamWConfig& config) {
  const CheckedInt N = n;
  OpCount c;
  c.other_flops = (adamw_flops_per_element(config) * N).value();
  c.bytes_read = (16 * N).value();
  c.bytes_written = (12 * N).value();
  return c;
}

// One element, the shared formula of both kernels (so they agree bit for bit: no fast-math, no FMA
// contraction under -std=c++20). The decay is a template parameter, not a branch, so the loop vectorises and
// runs exactly the counted 14 (or 13) operations.
template <bool kDecay>
static inline void adamw_element(float& p, float& m, float& v, float g, const AdamWStep& s) {
  if constexpr (kDecay) p = p * s.decay;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
  const float denom = std::sqrt(v) / s.bc2_sqrt + s.eps;
  p = p - s.step_size * (m / denom);
}

template <bool kDecay>
static void reference_loop(float* p, float* m, float* v, const float* g, int64_t n, const AdamWStep& s) {
  for (int64_t i = 0; i < n; ++i) adamw_element<kDecay>(p[i], m[i], v[i], g[i], s);
}

template <bool kDecay>
static void fused_loop(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g,
                       int64_t n, const AdamWStep& s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) adamw_element<kDecay>(p[i], m[i], v[i], g[i], s);
}

void adamw_update_reference(float* p, float* m, float* v, const float* g, int64_t n, const AdamWStep& s) {
  s.apply_decay ? reference_loop<true>(p, m, v, g, n, s) : reference_loop<false>(p, m, v, g, n, s);
}

void adamw_update_fused(float* p, float* m, float* v, const float* g, int64_t n, const AdamWStep& s) {
  s.apply_decay ? fused_loop<true>(p, m, v, g, n, s) : fused_loop<false>(p, m, v, g, n, s);
}

OpCount adamw_master_count(int64_t n, const AdamWConfig& config, DType grad_dtype) {
  const CheckedInt N = n;
  OpCount c;
  c.other_flops = (adamw_flops_per_element(config) * N).value();
  c.bytes_read = ((12 + dtype_bytes(grad_dtype)) * N).value();
  c.bytes_written = ((12 + dtype_bytes(DType::bf16)) * N).value();
  return c;
}

namespace {
inline float grad_value(const float* g, int64_t i) { return g[i]; }
inline float grad_value(const bf16* g, int64_t i) { return to_float(g[i]); }

// One pass: widen the gradient, update master, m, v, write the bf16 param — every stream touched once.
template <bool kDecay, typename G>
void master_loop(float* __restrict master, float* __restrict m, float* __restrict v, const G* __restrict g,
                 bf16* __restrict param, int64_t n, const AdamWStep& s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    adamw_element<kDecay>(master[i], m[i], v[i], grad_value(g, i), s);
    param[i] = to_bf16(master[i]);
  }
}

}  // namespace

template <typename Grad>
void adamw_update_master_fused(float* master, float* m, float* v, const Grad* g, bf16* param, int64_t n,
                               const AdamWStep& s) {
  s.apply_decay ? master_loop<true>(master, m, v, g, param, n, s) : master_loop<false>(master, m, v, g, param, n, s);
}
template <typename Grad>
void adamw_update_master_reference(float* master, float* m, float* v, const Grad* g, bf16* param, int64_t n,
                                   const AdamWStep& s) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = grad_value(g, i);
    adamw_update_reference(master + i, m + i, v + i, &gi, 1, s);
    param[i] = to_bf16(master[i]);
  }
}
template void adamw_update_master_fused(float*, float*, float*, const float*, bf16*, int64_t, const AdamWStep&);
template void adamw_update_master_fused(float*, float*, float*, const bf16*, bf16*, int64_t, const AdamWStep&);
template void adamw_update_master_reference(float*, float*, float*, const float*, bf16*, int64_t, const AdamWStep&);
template void adamw_update_master_reference(float*, float*, float*, const bf16*, bf16*, int64_t, const AdamWStep&);

AdamW::AdamW(std::vector<Parameter>& params, const AdamWConfig& config) : params_(params), config_(config) {}

void AdamW::create_state() {
  if (!m_.empty()) return;
  {
    for (const Parameter& prm : params_) {
      m_.push_back(Tensor::zeros(prm.value.shape(), Category::optimizer_state, prm.name + ".exp_avg"));
      v_.push_back(Tensor::zeros(prm.value.shape(), Category::optimizer_state, prm.name + ".exp_avg_sq"));
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      const int64_t n = params_[i].value.numel();
      num_elements_ += n;
      for (int64_t off = 0; off < n; off += kChunkElements) {
        chunks_.push_back({params_[i].value.data() + off, m_[i].data() + off, v_[i].data() + off,
                           params_[i].grad.data() + off, std::min(kChunkElements, n - off)});
      }
    }
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() {
  create_state();
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(m_[i].name(), m_[i]);
    out.emplace_back(v_[i].name(), v_[i]);
  }
  return out;
}

void AdamW::step() {
  create_state();  // lazily, as PyTorch: state exists only once the optimizer has stepped
  ++step_;
  PhaseScope phase(Phase::optimizer);
  OpRecord record("adamw");
  const AdamWStep s = adamw_step_constants(config_, step_);
  const int64_t num_chunks = static_cast<int64_t>(chunks_.size());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks_[static_cast<size_t>(c)];
    adamw_update_fused(ch.p, ch.m, ch.v, ch.g, ch.n, s);
  }
  record.count = adamw_count(num_elements_, config_);
}

AdamWMasterWeights::AdamWMasterWeights(std::vector<Parameter>& params, const AdamWConfig& config)
    : params_(params), config_(config) {
  if (!params.empty()) grad_dtype_ = params[0].grad.dtype();
  for (const Parameter& p : params) {
    check_arg(p.value.dtype() == DType::bf16 && p.value.is_contiguous(),
              "master weights: parameter '{}' must be a contiguous bfloat16 tensor, is {}", p.name,
              dtype_name(p.value.dtype()));
    check_arg(p.grad.dtype() == grad_dtype_ && (grad_dtype_ == DType::bf16 || grad_dtype_ == DType::f32) &&
                  p.grad.shape() == p.value.shape() && p.grad.is_contiguous(),
              "master weights: gradient of '{}' must be contiguous, shaped as the value, and bfloat16 or float32 like "
              "every other gradient ({})",
              p.name, dtype_name(grad_dtype_));
  }
}

void AdamWMasterWeights::create_state() {
  if (!m_.empty()) return;
  {
    for (const Parameter& p : params_) {
      Tensor master = Tensor::empty(p.value.shape(), Category::optimizer_state, p.name + ".master");
      convert_to_float(master.data(), p.value.data_bf16(), p.value.numel());
      master_.push_back(master);
      m_.push_back(Tensor::zeros(p.value.shape(), Category::optimizer_state, p.name + ".exp_avg"));
      v_.push_back(Tensor::zeros(p.value.shape(), Category::optimizer_state, p.name + ".exp_avg_sq"));
      num_elements_ += p.value.numel();
    }
  }
}

std::vector<std::pair<std::string, Tensor>> AdamWMasterWeights::state_tensors() {
  create_state();
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(master_[i].name(), master_[i]);
    out.emplace_back(m_[i].name(), m_[i]);
    out.emplace_back(v_[i].name(), v_[i]);
  }
  return out;
}

void AdamWMasterWeights::step() {
  create_state();
  ++step_;
  PhaseScope phase(Phase::optimizer);
  OpRecord record("adamw");
  const AdamWStep s = adamw_step_constants(config_, step_);
  for (size_t t = 0; t < params_.size(); ++t) {
    const int64_t n = params_[t].value.numel();
    float *master = master_[t].data(), *m = m_[t].data(), *v = v_[t].data();
    bf16* param = params_[t].value.data_bf16();
    const Tensor& grad = params_[t].grad;
#pragma omp parallel for schedule(static)
    for (int64_t begin = 0; begin < n; begin += kChunkElements) {
      const int64_t len = std::min(kChunkElements, n - begin);
      if (grad_dtype_ == DType::bf16) {
        adamw_update_master_fused(master + begin, m + begin, v + begin, grad.data_bf16() + begin, param + begin, len,
                                  s);
      } else {
        adamw_update_master_fused(master + begin, m + begin, v + begin, grad.data() + begin, param + begin, len, s);
      }
    }
  }
  record.count = adamw_master_count(num_elements_, config_, grad_dtype_);
}

}  // namespace reckon
