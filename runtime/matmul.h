// Matmul on oneDNN 2.6 (dnnl::matmul), the one place the runtime multiplies matrices.
//
//   dst (..., M, N)  =  alpha * a (..., M, K) · b (..., K, N)   [+ dst, if accumulate]   [+ bias (N), broadcast]
//
// A bias (nn.Linear's) is oneDNN's bias argument: added to every row inside the primitive, no second pass over dst;
// only with alpha = 1 and without accumulate (what a linear forward needs), float32 or the operands' bf16.
// dtypes: a and b both float32, or both bfloat16 (products exact, accumulated in float32 by oneDNN); dst
// float32, or bfloat16 for bf16 operands (rounded once, at the end).
//
// a, b, dst are Tensor views of 2 to 4 dims with equal batch dims; transposes are expressed by strides
// (a.transpose(-2, -1)), never by copies. Each distinct geometry (dims, strides, alpha, accumulate,
// thread count) creates its primitive once and caches it. oneDNN runs in user scratchpad mode: its
// scratchpad is allocated through the tracking allocator as `temporary` "onednn.scratchpad.<op>" for the
// duration of the call. Every call records its FLOPs and bytes under `op` (see docs/conventions.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/tensor.h"

namespace reckon {

// The shape of one matmul call, without data: what oneDNN's primitive depends on.
struct MatmulGeometry {
  int rank = 2;  // 2..4; the leading rank-2 dims are batch dims
  int64_t a_dims[kMaxDims]{}, a_strides[kMaxDims]{};
  int64_t b_dims[kMaxDims]{}, b_strides[kMaxDims]{};
  int64_t dst_dims[kMaxDims]{}, dst_strides[kMaxDims]{};
  float alpha = 1.0f;
  bool accumulate = false;
  DType a_dtype = DType::f32, b_dtype = DType::f32, dst_dtype = DType::f32;
  bool bias = false;  // a (N) vector added to every row
  DType bias_dtype = DType::f32;

  int64_t batch() const;  // product of batch dims
  int64_t m() const { return a_dims[rank - 2]; }
  int64_t k() const { return a_dims[rank - 1]; }
  int64_t n() const { return b_dims[rank - 1]; }
};

// Same dims, strides, alpha, accumulate and dtypes (the fields oneDNN's primitive depends on, besides threads).
bool same_geometry(const MatmulGeometry& a, const MatmulGeometry& b);

// Validates shapes (names the argument and the allowed range on error) and returns the geometry.
MatmulGeometry matmul_geometry(const Tensor& dst, const Tensor& a, const Tensor& b, float alpha, bool accumulate);
// A contiguous-dst geometry from shapes alone, for estimators: a (batch, M, K) with strides as given.
MatmulGeometry matmul_geometry_plain(int64_t batch, int64_t m, int64_t k, int64_t n, bool a_transposed,
                                     bool b_transposed, float alpha, bool accumulate);

// FLOPs and bytes one call executes (docs/conventions.md): matmul_flops = 2*batch*M*N*K; other_flops =
// batch*M*N for alpha != 1, again for accumulate and again for a bias; reads a, b (and dst if accumulating, the N
// bias values per batch with a bias), writes dst, each at its dtype's element size (4 or 2 bytes).
int64_t matmul_flops(const MatmulGeometry& g);
int64_t matmul_other_flops(const MatmulGeometry& g);
int64_t matmul_bytes_read(const MatmulGeometry& g);
int64_t matmul_bytes_written(const MatmulGeometry& g);

// Scratchpad bytes oneDNN asks for with this geometry at the current thread count (creates and caches
// the primitive if needed).
int64_t matmul_scratchpad_bytes(const MatmulGeometry& g);
// Which oneDNN implementation runs this geometry, e.g. "brg:avx512_core".
std::string matmul_impl_name(const MatmulGeometry& g);

void matmul(const Tensor& dst, const Tensor& a, const Tensor& b, std::string_view op = "matmul", float alpha = 1.0f,
            bool accumulate = false, const Tensor& bias = Tensor());
// The geometry with `bias` (contiguous, N elements, float32 or the operands' bf16; alpha 1, no accumulate) checked.
MatmulGeometry matmul_geometry_with_bias(const Tensor& dst, const Tensor& a, const Tensor& b, const Tensor& bias);

// Naive float64 reference with the same semantics (for tests and the benchmark baseline).
void matmul_reference(const Tensor& dst, const Tensor& a, const Tensor& b, float alpha = 1.0f, bool accumulate = false,
                      const Tensor& bias = Tensor());

int64_t matmul_cache_size();  // number of cached primitives
void matmul_cache_clear();

}  // namespace reckon
