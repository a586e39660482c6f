#include "runtime/kernel_isa.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/check.h"

namespace reckon {

namespace {
Bf16Kernel& current() {
  static Bf16Kernel kernel = bf16_kernel_best();
  return kernel;
}

// oneDNN's ISA values are ordered bit sets: an ISA includes the bits of every ISA below it.
bool onednn_allows(dnnl::cpu_isa needed) {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa()), bits = static_cast<unsigned>(needed);
  return (isa & bits) == bits;
}

// Linux keeps AMX's tile data off until a process asks (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); oneDNN asks
// the same way, and asking twice is harmless.
bool amx_permitted() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
}  // namespace

Bf16Kernel bf16_kernel_best() {
  static const Bf16Kernel best = [] {
    if (onednn_allows(dnnl::cpu_isa::avx512_core_amx) && __builtin_cpu_supports("amx-tile") &&
        __builtin_cpu_supports("amx-bf16") && amx_permitted())
      return Bf16Kernel::amx;
    if (onednn_allows(dnnl::cpu_isa::avx512_core_bf16) && __builtin_cpu_supports("avx512bf16"))
      return Bf16Kernel::avx512_bf16;
    return Bf16Kernel::f32;
  }();
  return best;
}

Bf16Kernel bf16_kernel() { return current(); }

const char* bf16_kernel_name(Bf16Kernel kernel) {
  switch (kernel) {
    case Bf16Kernel::amx:
      return "amx";
    case Bf16Kernel::avx512_bf16:
      return "avx512_bf16";
    case Bf16Kernel::f32:
      break;
  }
  return "f32";
}

ScopedBf16Kernel::ScopedBf16Kernel(Bf16Kernel kernel) : previous_(current()) {
  check_arg(static_cast<int>(kernel) <= static_cast<int>(bf16_kernel_best()),
            "bf16 kernel {}: this CPU (with ONEDNN_MAX_CPU_ISA, if set) runs at most {}", bf16_kernel_name(kernel),
            bf16_kernel_name(bf16_kernel_best()));
  current() = kernel;
}

ScopedBf16Kernel::~ScopedBf16Kernel() { current() = previous_; }

}  // namespace reckon
