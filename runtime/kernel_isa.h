// Which instruction set reckon's own bf16 kernels run on (today: flash attention's products on bf16 storage).
//   amx          AMX tiles (TDPBF16PS: a 16 × 32 by 32 × 16 bf16 product into 16 × 16 float32), Intel Sapphire
//                Rapids and later; Linux grants the tile state per process (arch_prctl), requested once here;
//   avx512_bf16  VDPBF16PS: two bf16 products added into each float32 lane (AMD Zen 4/5, Intel Cooper Lake and
//                later);
//   f32          widen each bf16 to float32 and multiply in float32: the reference path, and the only one on CPUs
//                without AVX512-BF16.
// Chosen once from the CPU (cpuid) and capped by oneDNN's effective ISA, so ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16
// runs the VDPBF16PS path on an AMX machine and AVX512_CORE the f32 path anywhere, as it does oneDNN's own
// kernels. Tests force a path with ScopedBf16Kernel.
#pragma once

namespace reckon {

enum class Bf16Kernel { f32, avx512_bf16, amx };  // in order: each CPU that runs one runs those before it

Bf16Kernel bf16_kernel();                         // the path in effect now
Bf16Kernel bf16_kernel_best();                    // what this CPU and ONEDNN_MAX_CPU_ISA allow
const char* bf16_kernel_name(Bf16Kernel kernel);  // "f32", "avx512_bf16", "amx"

// For the scope: run `kernel` instead (any path at or below bf16_kernel_best(); else throws std::invalid_argument
// naming the CPU's best). Not thread-safe: set it outside parallel regions.
class ScopedBf16Kernel {
 public:
  explicit ScopedBf16Kernel(Bf16Kernel kernel);
  ~ScopedBf16Kernel();
  ScopedBf16Kernel(const ScopedBf16Kernel&) = delete;
  ScopedBf16Kernel& operator=(const ScopedBf16Kernel&) = delete;

 private:
  Bf16Kernel previous_;
};

}  // namespace reckon
