// The "textbook" activation convention of the seeds' problem statement (CS336 adamwAccounting): per block
// RMSNorm(s), QKV projections, QᵀK, softmax, weighted sum of values, output projection, W1, SiLU, W2; then
// the final RMSNorm, the output embedding and the cross-entropy on logits — one output-sized float32 tensor
// each. Beside it, tensor by tensor, what reckon's implementation actually keeps for backward, and why.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace reckon {

struct ActivationRow {
  std::string item;         // textbook item, or "(not listed)"
  int64_t textbook_floats;  // for the whole model at the config's batch size
  std::string implemented;  // reckon tensor name(s), e.g. "layers.*.attn.probs"
  int64_t implemented_floats;
  std::string why;
};

// Rows in model order; sums: textbook_activation_floats / implemented_saved_floats.
std::vector<ActivationRow> activation_comparison(const ModelConfig& config);
int64_t textbook_activation_floats(const ModelConfig& config);

}  // namespace reckon
