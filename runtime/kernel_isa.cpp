#include "runtime/kernel_isa.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/check.h"

namespace reckon {

namespace {
KernelIsa& current() {
  static KernelIsa isa = kernel_isa_default();
  return isa;
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

KernelIsa kernel_isa_best() {
  static const KernelIsa best = [] {
    if (onednn_allows(dnnl::cpu_isa::avx512_core_amx) && __builtin_cpu_supports("amx-tile") &&
        __builtin_cpu_supports("amx-bf16") && amx_permitted())
      return KernelIsa::amx;
    if (onednn_allows(dnnl::cpu_isa::avx512_core_bf16) && __builtin_cpu_supports("avx512bf16"))
      return KernelIsa::avx512_bf16;
    if (onednn_allows(dnnl::cpu_isa::avx512_core) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return KernelIsa::avx512;
    return KernelIsa::reference;
  }();
  return best;
}

KernelIsa kernel_isa_default() {
  // Intel's VDPBF16PS, where there is no AMX, does half the float32 FMAs' work per second (measured on Sapphire
  // and Emerald Rapids: flash attention at T = 2048 on bf16 storage 106 ms on VDPBF16PS, 63 ms on float32 tiles;
  // oneDNN's own bf16 matmul 112 GFLOP/s on it against 234 in float32); AMD's Zen 4 and 5 run it at the FMAs'
  // instruction rate, twice their FLOPs.
  const KernelIsa best = kernel_isa_best();
  return best == KernelIsa::avx512_bf16 && __builtin_cpu_is("intel") ? KernelIsa::avx512 : best;
}

KernelIsa kernel_isa() { return current(); }

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::amx:
      return "amx";
    case KernelIsa::avx512_bf16:
      return "avx512_bf16";
    case KernelIsa::avx512:
      return "avx512";
    case KernelIsa::reference:
      break;
  }
  return "reference";
}

ScopedKernelIsa::ScopedKernelIsa(KernelIsa isa) : previous_(current()) {
  check_arg(static_cast<int>(isa) <= static_cast<int>(kernel_isa_best()),
            "kernel ISA {}: this CPU (with ONEDNN_MAX_CPU_ISA, if set) runs at most {}", kernel_isa_name(isa),
            kernel_isa_name(kernel_isa_best()));
  current() = isa;
}

ScopedKernelIsa::~ScopedKernelIsa() { current() = previous_; }

}  // namespace reckon
