#include "runtime/matmul.h"

#include <omp.h>

#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/checked.h"
#include "runtime/counters.h"
#include "runtime/onednn.h"

namespace reckon {

namespace {

struct CachedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  int64_t scratchpad_bytes = 0;
};

std::mutex cache_mutex;
std::map<std::vector<int64_t>, CachedMatmul>& cache() {
  static std::map<std::vector<int64_t>, CachedMatmul> c;
  return c;
}

// Everything that defines a geometry, as integers (the cache key adds the thread count).
std::vector<int64_t> geometry_fields(const MatmulGeometry& g) {
  std::vector<int64_t> key;
  key.reserve(6 * kMaxDims + 5);
  key.push_back(g.rank);
  for (const int64_t* arr : {g.a_dims, g.a_strides, g.b_dims, g.b_strides, g.dst_dims, g.dst_strides}) {
    key.insert(key.end(), arr, arr + g.rank);
  }
  uint32_t alpha_bits;
  std::memcpy(&alpha_bits, &g.alpha, sizeof alpha_bits);
  key.push_back(alpha_bits);
  key.push_back(g.accumulate ? 1 : 0);
  for (DType t : {g.a_dtype, g.b_dtype, g.dst_dtype}) key.push_back(static_cast<int64_t>(t));
  key.push_back(g.bias ? 1 + static_cast<int64_t>(g.bias_dtype) : 0);
  return key;
}

std::vector<int64_t> cache_key(const MatmulGeometry& g) {
  std::vector<int64_t> key = geometry_fields(g);
  // oneDNN fixes the thread count when the primitive descriptor is created.
  key.push_back(omp_get_max_threads());
  return key;
}

dnnl::memory::desc md(int rank, const int64_t* dims, const int64_t* strides, DType dtype) {
  return dnnl::memory::desc(dnnl::memory::dims(dims, dims + rank),
                            dtype == DType::bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32,
                            dnnl::memory::dims(strides, strides + rank));
}

std::string dims_str(int rank, const int64_t* d) {
  std::string s = "(";
  for (int i = 0; i < rank; ++i) s += fmt::format("{}{}", i ? ", " : "", d[i]);
  return s + ")";
}

// oneDNN 2.6 computes some offsets and blockings in 32-bit integers: a dimension past 2^31 - 1 ends in a
// SIGFPE inside primitive creation (seen at M = 2^32 rows), so such a geometry is refused before it gets there.
void check_onednn_limits(const MatmulGeometry& g) {
  constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();
  for (const int64_t* dims : {g.a_dims, g.b_dims, g.dst_dims}) {
    for (int d = 0; d < g.rank; ++d) {
      if (dims[d] > kMaxDim) {
        throw std::invalid_argument(fmt::format(
            "matmul: a {} x b {} -> dst {} has a dimension of {}, above oneDNN's limit of {} (2^31 - 1); lower "
            "batch_size or context_length",
            dims_str(g.rank, g.a_dims), dims_str(g.rank, g.b_dims), dims_str(g.rank, g.dst_dims), dims[d], kMaxDim));
      }
    }
  }
}

const CachedMatmul& lookup(const MatmulGeometry& g) {
  check_onednn_limits(g);
  const std::vector<int64_t> key = cache_key(g);
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache().find(key);
  if (it != cache().end()) return it->second;

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (g.alpha != 1.0f) attr.set_output_scales(0, {g.alpha});
  if (g.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  CachedMatmul entry;
  try {
    const dnnl::memory::desc a = md(g.rank, g.a_dims, g.a_strides, g.a_dtype);
    const dnnl::memory::desc b = md(g.rank, g.b_dims, g.b_strides, g.b_dtype);
    const dnnl::memory::desc dst = md(g.rank, g.dst_dims, g.dst_strides, g.dst_dtype);
    if (g.bias) {  // (1, …, 1, N), contiguous: broadcast over the batch and the rows
      int64_t dims[kMaxDims], strides[kMaxDims];
      for (int d = 0; d < g.rank; ++d) dims[d] = 1, strides[d] = g.n();
      dims[g.rank - 1] = g.n(), strides[g.rank - 1] = 1;
      const dnnl::matmul::desc desc(a, b, md(g.rank, dims, strides, g.bias_dtype), dst);
      entry.pd = dnnl::matmul::primitive_desc(desc, attr, onednn_engine());
    } else {
      const dnnl::matmul::desc desc(a, b, dst);
      entry.pd = dnnl::matmul::primitive_desc(desc, attr, onednn_engine());
    }
    entry.primitive = dnnl::matmul(entry.pd);
  } catch (const dnnl::error& e) {
    throw std::invalid_argument(fmt::format(
        "matmul: oneDNN cannot run a {} strides {} x b {} strides {} -> dst {} strides {}: {}",
        dims_str(g.rank, g.a_dims), dims_str(g.rank, g.a_strides), dims_str(g.rank, g.b_dims),
        dims_str(g.rank, g.b_strides), dims_str(g.rank, g.dst_dims), dims_str(g.rank, g.dst_strides), e.what()));
  }
  entry.scratchpad_bytes = static_cast<int64_t>(entry.pd.scratchpad_desc().get_size());
  return cache().emplace(key, std::move(entry)).first->second;
}

void check(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// One element of an f32 or bf16 tensor, at an offset (in elements) from the view's start.
double element(const Tensor& t, int64_t at) {
  return t.dtype() == DType::bf16 ? static_cast<double>(to_float(t.data_bf16()[at]))
                                  : static_cast<double>(t.data()[at]);
}

}  // namespace

bool same_geometry(const MatmulGeometry& a, const MatmulGeometry& b) {
  return geometry_fields(a) == geometry_fields(b);
}

int64_t MatmulGeometry::batch() const {
  CheckedInt b = 1;
  for (int d = 0; d < rank - 2; ++d) b *= dst_dims[d];
  return b.value();
}

MatmulGeometry matmul_geometry(const Tensor& dst, const Tensor& a, const Tensor& b, float alpha, bool accumulate) {
  check(a.defined() && b.defined() && dst.defined(), "matmul: a, b and dst must be defined tensors");
  const int rank = dst.dim();
  check(rank >= 2 && rank <= kMaxDims,
        fmt::format("matmul: dst has {} dims, allowed range is [2, {}]", rank, kMaxDims));
  check(a.dim() == rank && b.dim() == rank,
        fmt::format("matmul: a has {} dims and b has {}, both must equal dst's {}", a.dim(), b.dim(), rank));
  for (int d = 0; d < rank - 2; ++d) {
    check(a.size(d) == dst.size(d) && b.size(d) == dst.size(d),
          fmt::format("matmul: batch dim {} is {} in a, {} in b, {} in dst; they must be equal", d, a.size(d),
                      b.size(d), dst.size(d)));
  }
  check(a.size(-1) == b.size(-2),
        fmt::format("matmul: a {} and b {} disagree on K: a.size(-1) = {} must equal b.size(-2) = {}", a.shape_str(),
                    b.shape_str(), a.size(-1), b.size(-2)));
  check(dst.size(-2) == a.size(-2) && dst.size(-1) == b.size(-1),
        fmt::format("matmul: dst {} must be (..., {}, {}) for a {} and b {}", dst.shape_str(), a.size(-2), b.size(-1),
                    a.shape_str(), b.shape_str()));
  check(dst.stride(-1) == 1 || dst.size(-1) == 1,
        fmt::format("matmul: dst '{}' must have its last dim contiguous (stride 1), has stride {}", dst.name(),
                    dst.stride(-1)));
  const bool operands_ok = a.dtype() == b.dtype() && (a.dtype() == DType::f32 || a.dtype() == DType::bf16);
  check(operands_ok, fmt::format("matmul: a '{}' is {} and b '{}' is {}; allowed: both float32 or both bfloat16",
                                 a.name(), dtype_name(a.dtype()), b.name(), dtype_name(b.dtype())));
  check(dst.dtype() == DType::f32 || (dst.dtype() == DType::bf16 && a.dtype() == DType::bf16),
        fmt::format("matmul: dst '{}' is {}; allowed: float32, or bfloat16 when a and b are bfloat16", dst.name(),
                    dtype_name(dst.dtype())));
  MatmulGeometry g;
  g.rank = rank;
  g.alpha = alpha;
  g.accumulate = accumulate;
  g.a_dtype = a.dtype(), g.b_dtype = b.dtype(), g.dst_dtype = dst.dtype();
  for (int d = 0; d < rank; ++d) {
    g.a_dims[d] = a.size(d), g.a_strides[d] = a.stride(d);
    g.b_dims[d] = b.size(d), g.b_strides[d] = b.stride(d);
    g.dst_dims[d] = dst.size(d), g.dst_strides[d] = dst.stride(d);
  }
  return g;
}

MatmulGeometry matmul_geometry_plain(int64_t batch, int64_t m, int64_t k, int64_t n, bool a_transposed,
                                     bool b_transposed, float alpha, bool accumulate) {
  MatmulGeometry g;
  g.rank = 3;
  g.alpha = alpha;
  g.accumulate = accumulate;
  const int64_t a_dims[3] = {batch, m, k}, b_dims[3] = {batch, k, n}, dst_dims[3] = {batch, m, n};
  const int64_t a_strides[3] = {m * k, a_transposed ? 1 : k, a_transposed ? m : 1};
  const int64_t b_strides[3] = {k * n, b_transposed ? 1 : n, b_transposed ? k : 1};
  const int64_t dst_strides[3] = {m * n, n, 1};
  for (int d = 0; d < 3; ++d) {
    g.a_dims[d] = a_dims[d], g.a_strides[d] = a_strides[d];
    g.b_dims[d] = b_dims[d], g.b_strides[d] = b_strides[d];
    g.dst_dims[d] = dst_dims[d], g.dst_strides[d] = dst_strides[d];
  }
  return g;
}

int64_t matmul_flops(const MatmulGeometry& g) { return (CheckedInt(2) * g.batch() * g.m() * g.n() * g.k()).value(); }

int64_t matmul_other_flops(const MatmulGeometry& g) {
  const CheckedInt mn = CheckedInt(g.batch()) * g.m() * g.n();
  return ((g.alpha != 1.0f ? mn : 0) + (g.accumulate ? mn : 0) + (g.bias ? mn : 0)).value();
}

int64_t matmul_bytes_read(const MatmulGeometry& g) {
  const CheckedInt m = g.m(), k = g.k(), n = g.n();
  const CheckedInt bytes = m * k * dtype_bytes(g.a_dtype) + k * n * dtype_bytes(g.b_dtype) +
                           (g.accumulate ? m * n * dtype_bytes(g.dst_dtype) : 0) +
                           (g.bias ? n * dtype_bytes(g.bias_dtype) : 0);
  return (CheckedInt(g.batch()) * bytes).value();
}

int64_t matmul_bytes_written(const MatmulGeometry& g) {
  return (CheckedInt(g.batch()) * g.m() * g.n() * dtype_bytes(g.dst_dtype)).value();
}

int64_t matmul_scratchpad_bytes(const MatmulGeometry& g) { return lookup(g).scratchpad_bytes; }

std::string matmul_impl_name(const MatmulGeometry& g) { return lookup(g).pd.impl_info_str(); }

MatmulGeometry matmul_geometry_with_bias(const Tensor& dst, const Tensor& a, const Tensor& b, const Tensor& bias) {
  MatmulGeometry g = matmul_geometry(dst, a, b, 1.0f, false);
  check(bias.dim() == 1 && bias.is_contiguous() && bias.size(0) == g.n(),
        fmt::format("matmul: bias '{}' {} must be a contiguous vector of N = {} elements", bias.name(),
                    bias.shape_str(), g.n()));
  check(bias.dtype() == DType::f32 || (bias.dtype() == DType::bf16 && g.a_dtype == DType::bf16),
        fmt::format("matmul: bias '{}' is {}; allowed: float32, or bfloat16 with bfloat16 operands", bias.name(),
                    dtype_name(bias.dtype())));
  g.bias = true;
  g.bias_dtype = bias.dtype();
  return g;
}

void matmul(const Tensor& dst, const Tensor& a, const Tensor& b, std::string_view op, float alpha, bool accumulate,
            const Tensor& bias) {
  OpRecord record(op);
  check(!bias.defined() || (alpha == 1.0f && !accumulate),
        "matmul: a bias is only added with alpha = 1 and without accumulate");
  const MatmulGeometry g =
      bias.defined() ? matmul_geometry_with_bias(dst, a, b, bias) : matmul_geometry(dst, a, b, alpha, accumulate);
  const CachedMatmul& entry = lookup(g);

  dnnl::engine& eng = onednn_engine();
  dnnl::memory a_mem(entry.pd.src_desc(), eng, a.raw_data());
  dnnl::memory b_mem(entry.pd.weights_desc(), eng, b.raw_data());
  dnnl::memory dst_mem(entry.pd.dst_desc(), eng, dst.raw_data());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, dst_mem}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(entry.pd.bias_desc(), eng, bias.raw_data()));
  Tensor scratchpad;
  if (entry.scratchpad_bytes > 0) {
    const int64_t floats = (entry.scratchpad_bytes + 3) / 4;
    scratchpad = Tensor::empty({floats}, Category::temporary, fmt::format("onednn.scratchpad.{}", op));
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(entry.pd.scratchpad_desc(), eng, scratchpad.data()));
  }
  entry.primitive.execute(onednn_stream(), args);
  onednn_stream().wait();

  record.count.matmul_flops = matmul_flops(g);
  record.count.other_flops = matmul_other_flops(g);
  record.count.bytes_read = matmul_bytes_read(g);
  record.count.bytes_written = matmul_bytes_written(g);
}

void matmul_reference(const Tensor& dst, const Tensor& a, const Tensor& b, float alpha, bool accumulate,
                      const Tensor& bias) {
  const MatmulGeometry g = matmul_geometry(dst, a, b, alpha, accumulate);
  const int r = g.rank;
  // Walk batch dims as a padded (b0, b1) pair.
  const int64_t nb0 = r >= 4 ? g.dst_dims[r - 4] : 1, nb1 = r >= 3 ? g.dst_dims[r - 3] : 1;
  auto bstride = [&](const int64_t* s, int back) { return r - back >= 0 ? s[r - back] : 0; };
  for (int64_t i0 = 0; i0 < nb0; ++i0)
    for (int64_t i1 = 0; i1 < nb1; ++i1) {
      const int64_t oa = i0 * bstride(g.a_strides, 4) + i1 * bstride(g.a_strides, 3);
      const int64_t ob = i0 * bstride(g.b_strides, 4) + i1 * bstride(g.b_strides, 3);
      const int64_t od = i0 * bstride(g.dst_strides, 4) + i1 * bstride(g.dst_strides, 3);
      for (int64_t m = 0; m < g.m(); ++m)
        for (int64_t n = 0; n < g.n(); ++n) {
          double sum = 0.0;
          for (int64_t k = 0; k < g.k(); ++k) {
            sum += element(a, oa + m * g.a_strides[r - 2] + k * g.a_strides[r - 1]) *
                   element(b, ob + k * g.b_strides[r - 2] + n * g.b_strides[r - 1]);
          }
          const int64_t at = od + m * g.dst_strides[r - 2] + n * g.dst_strides[r - 1];
          const double prior = accumulate ? element(dst, at) : 0.0;
          const double added = bias.defined() ? element(bias, n) : 0.0;
          const float out = static_cast<float>(alpha * sum + prior + added);
          if (dst.dtype() == DType::bf16)
            dst.data_bf16()[at] = to_bf16(out);
          else
            dst.data()[at] = out;
        }
    }
}

int64_t matmul_cache_size() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  return static_cast<int64_t>(cache().size());
}

void matmul_cache_clear() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  cache().clear();
}

}  // namespace reckon
