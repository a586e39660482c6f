// Which instructions reckon's own kernels may use (today: flash attention's tiles), in order — a CPU that runs a
// level runs every level before it:
//   reference    plain C++ loops (the compiler's vectors): any CPU, and the reference the others are tested against;
//   avx512       AVX-512F: float32 tiles with masked full-width rows (bf16 storage widened to float32);
//   avx512_bf16  VDPBF16PS: two bf16 products added into each float32 lane (AMD Zen 4/5, Intel Cooper Lake and
//                later);
//   amx          AMX tiles (TDPBF16PS: a 16 × 32 by 32 × 16 bf16 product into 16 × 16 float32), Intel Sapphire
//                Rapids and later; Linux grants the tile state per process (arch_prctl), requested once here.
// Chosen once from the CPU (cpuid) and capped by oneDNN's effective ISA, so ONEDNN_MAX_CPU_ISA=AVX512_CORE
// runs the float32 tiles anywhere and AVX2 the reference, as it caps oneDNN's own kernels. The level in effect is
// the best one except on Intel CPUs without AMX, whose VDPBF16PS is slower than widening to float32 (avx512; see
// kernel_isa_default). Tests and benchmarks force any level up to the best with ScopedKernelIsa.
#pragma once

namespace reckon {

enum class KernelIsa { reference, avx512, avx512_bf16, amx };

KernelIsa kernel_isa();                      // the level in effect now
KernelIsa kernel_isa_best();                 // what this CPU and ONEDNN_MAX_CPU_ISA allow
KernelIsa kernel_isa_default();              // the fastest of those: best, but avx512 on Intel without AMX
const char* kernel_isa_name(KernelIsa isa);  // "reference", "avx512", "avx512_bf16", "amx"
inline bool kernel_isa_at_least(KernelIsa isa) { return static_cast<int>(kernel_isa()) >= static_cast<int>(isa); }

// For the scope: run at `isa` instead (any level at or below kernel_isa_best(); else throws std::invalid_argument
// naming this CPU's best). Not thread-safe: set it outside parallel regions.
class ScopedKernelIsa {
 public:
  explicit ScopedKernelIsa(KernelIsa isa);
  ~ScopedKernelIsa();
  ScopedKernelIsa(const ScopedKernelIsa&) = delete;
  ScopedKernelIsa& operator=(const ScopedKernelIsa&) = delete;

 private:
  KernelIsa previous_;
};

}  // namespace reckon
