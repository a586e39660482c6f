#include "model/precision.h"

namespace reckon {

DTypePlan dtype_plan(Precision precision, GradDType grad_dtype) {
  DTypePlan plan;
  if (precision == Precision::fp32) return plan;
  plan.act = DType::bf16;
  if (precision == Precision::amp_bf16) {
    plan.weight_cache = true;
    return plan;
  }
  plan.param = DType::bf16;
  plan.grad = grad_dtype == GradDType::fp32 ? DType::f32 : DType::bf16;
  plan.master_weights = true;
  return plan;
}

const std::vector<PrecisionSetting>& precision_settings() {
  static const std::vector<PrecisionSetting> settings = {{Precision::fp32, GradDType::automatic},
                                                         {Precision::amp_bf16, GradDType::automatic},
                                                         {Precision::bf16, GradDType::automatic},
                                                         {Precision::bf16, GradDType::fp32}};
  return settings;
}

}  // namespace reckon
