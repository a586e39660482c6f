// The parameter count as a closed form of the config, independent of model/layout.h: the oracle the layout (and
// so the model, the replay and the estimators) is checked against, beside published counts.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "runtime/checked.h"

namespace reckon::testing_ref {

inline int64_t count_parameters(const ModelConfig& c) {
  const CheckedInt v = c.vocab_size, d = c.d_model, f = c.d_ff;
  const bool gated = c.ffn == FfnKind::swiglu || c.ffn == FfnKind::geglu || c.ffn == FfnKind::geglu_tanh;
  const CheckedInt ffn_mats = gated ? 3 : 2;
  // Per layer: two norms' gains (and LayerNorm biases), four with norms before and after each sublayer (sandwich); a
  // parallel block has one.
  const int64_t layer_norms = c.block == Block::parallel ? 1 : c.norm_placement == NormPlacement::sandwich ? 4 : 2;
  const CheckedInt norm = layer_norms * (c.norm_bias ? 2 : 1);
  const CheckedInt final_norm = c.norm_bias ? 2 : 1;
  const CheckedInt ffn_biases = c.mlp_bias ? (gated ? 2 : 1) * f + d : CheckedInt(0);  // w1 (w3) and w2
  // q and o: D × H·head_dim each; k and v: D × KV·head_dim each (head_dim = D / H unless set).
  const int64_t head = c.head_dim > 0 ? c.head_dim : c.d_model / c.num_heads;
  const int64_t kv = c.num_kv_heads > 0 ? c.num_kv_heads : c.num_heads;
  // Biases (attention_bias): q, k, v's widths (qkv, qkvo) and o's D (qkvo).
  const bool qkv_bias = c.attention_bias != AttentionBias::none, o_bias = c.attention_bias == AttentionBias::qkvo;
  const CheckedInt attention = 2 * d * (CheckedInt(c.num_heads) * head) + 2 * d * (CheckedInt(kv) * head) +
                               (qkv_bias ? CheckedInt(c.num_heads) * head + 2 * CheckedInt(kv) * head : 0) +
                               (o_bias ? d : CheckedInt(0));
  // qk_norm: one gain over the whole q projection and one over k's.
  const CheckedInt qk_norm = c.qk_norm ? CheckedInt(c.num_heads) * head + CheckedInt(kv) * head : CheckedInt(0);
  return (v * d                                                                              // token embedding
          + (c.position == Position::learned ? c.context_length * d : CheckedInt(0))         // learned positions
          + c.num_layers * (norm * d + attention + ffn_mats * f * d + ffn_biases + qk_norm)  // norms, attention, ffn
          + final_norm * d                                                                   // final norm
          + (c.tie_embeddings ? CheckedInt(0) : v * d))                                      // lm head
      .value();
}

}  // namespace reckon::testing_ref
