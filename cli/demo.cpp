#include "cli/demo.h"

#include <fmt/format.h>

#include "cli/memory_guard.h"
#include "cli/report.h"
#include "runtime/allocator.h"
#include "runtime/checked.h"
#include "runtime/counters.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace reckon {

int run_demo(int64_t m, int64_t in, int64_t out, const std::string& max_memory) {
  // W, dW (out·in); x, dX (m·in); y, dY (m·out): float32, each rounded up to 64 B.
  const CheckedInt bytes =
      2 * (CheckedInt(aligned_size(4 * out * in)) + aligned_size(4 * m * in) + aligned_size(4 * m * out));
  check_bytes_fit("demo", bytes.value(), memory_budget(max_memory));
  Tensor w = Tensor::empty({out, in}, Category::parameter, "demo.linear.weight");
  Tensor grad_w = Tensor::zeros({out, in}, Category::gradient, "demo.linear.weight.grad");
  w.fill(0.01f);
  Tensor x = Tensor::empty({m, in}, Category::activation, "demo.input");
  x.fill(1.0f);
  Tensor y = Tensor::empty({m, out}, Category::activation, "demo.linear.out");
  {
    PhaseScope phase(Phase::forward);
    matmul(y, x, w.transpose(0, 1), "linear");  // y = x·Wᵀ
  }
  {
    PhaseScope phase(Phase::backward);
    Tensor grad_y = Tensor::empty({m, out}, Category::temporary, "demo.linear.out.grad");
    grad_y.fill(1.0f);
    Tensor grad_x = Tensor::empty({m, in}, Category::temporary, "demo.input.grad");
    matmul(grad_x, grad_y, w, "linear");                              // dX = dY·W
    matmul(grad_w, grad_y.transpose(0, 1), x, "linear", 1.0f, true);  // dW += dYᵀ·X
  }
  fmt::print("\n## Memory by category (tracking allocator)\n\n{}\n", memory_table(tracker().stats()));
  fmt::print("## Tensors live at the peak\n\n{}\n", live_at_peak_table(tracker(), 10));
  fmt::print("## FLOPs and bytes per op x phase\n\n{}", counters_table(counters()));
  return 0;
}

}  // namespace reckon
