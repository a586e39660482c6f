// The parameter count as a closed form of the config, independent of model/layout.h: the oracle the layout (and
// so the model, the replay and the estimators) is checked against, beside published counts.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "runtime/checked.h"

namespace reckon::testing_ref {

inline int64_t count_parameters(const ModelConfig& c) {
  const CheckedInt v = c.vocab_size, d = c.d_model, f = c.d_ff;
  const CheckedInt ffn_mats = c.ffn == FfnKind::swiglu ? 3 : 2;
  return (v * d                                                                       // token embedding
          + (c.position == Position::learned ? c.context_length * d : CheckedInt(0))  // learned positions
          + c.num_layers * (2 * d + 4 * d * d + ffn_mats * f * d)                     // norms, attention, ffn
          + d                                                                         // final norm
          + (c.tie_embeddings ? CheckedInt(0) : v * d))                               // lm head
      .value();
}

}  // namespace reckon::testing_ref
