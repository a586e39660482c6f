// Training precision: which dtype each kind of buffer has (docs/conventions.md, "Mixed precision", buffer by
// buffer). One config field, `precision`, read by the model, the optimizer choice and the estimators alike.
//   fp32      float32 everywhere.
//   amp-bf16  PyTorch autocast: float32 parameters, gradients and AdamW state (4 + 4 + 8 B/param); every matmul
//             weight is cast to a bf16 copy once per step (autocast's weight-cast cache), alive until its last
//             use in backward; matmuls take bf16 operands; what they save for backward is bf16.
//   bf16      master weights: bf16 parameters are the model's working copy, gradients bf16 (`grad_dtype`
//             fp32: float32), the optimizer holds float32 master weights, m and v (2 + 2 + 12 or 2 + 4 + 12).
// Both mixed modes run the same activations (the "bf16 region": matmul inputs and outputs, attention, the
// gate) and keep the residual stream, RMSNorm statistics and the batch in float32.
#pragma once

#include <string_view>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/enum_table.h"

namespace reckon {

enum class Precision { fp32, amp_bf16, bf16 };
// `grad_dtype`: automatic = the parameters' dtype; fp32 = float32 gradients (the only choice besides automatic;
// bf16 gradients are what precision = bf16 has by default).
enum class GradDType { automatic, fp32, bf16 };

inline constexpr EnumName<Precision> kPrecisions[] = {
    {Precision::fp32, "fp32"}, {Precision::amp_bf16, "amp-bf16"}, {Precision::bf16, "bf16"}};
inline constexpr EnumName<GradDType> kGradDTypes[] = {
    {GradDType::automatic, "auto"}, {GradDType::fp32, "fp32"}, {GradDType::bf16, "bf16"}};
inline const char* precision_name(Precision p) { return enum_name(kPrecisions, p); }
inline const char* grad_dtype_name(GradDType g) { return enum_name(kGradDTypes, g); }

// The dtypes a precision gives each kind of buffer.
struct DTypePlan {
  DType param = DType::f32;                    // parameter values (the model's working copy)
  DType grad = DType::f32;                     // gradients
  DType act = DType::f32;                      // the bf16 region: matmul operands, attention, gate, logits
  bool weight_cache = false;                   // amp-bf16: a bf16 copy of each matmul weight per step
  bool master_weights = false;                 // bf16: the optimizer holds float32 master weights
  DType matmul_weight() const { return act; }  // what a matmul reads as its weight operand
};
DTypePlan dtype_plan(Precision precision, GradDType grad_dtype);

// The four distinct settings, in the order tables list them: fp32, amp-bf16, bf16 (bf16 grads), bf16 (fp32 grads).
struct PrecisionSetting {
  Precision precision;
  GradDType grad_dtype;
};
const std::vector<PrecisionSetting>& precision_settings();

}  // namespace reckon
