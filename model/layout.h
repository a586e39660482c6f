// The model's parameters, written once (llm.c's param_sizes[]): name, shape, role, unit and layer of each, in the
// model's order — which is also the order of the flat array that data parallelism buckets and ZeRO partitions.
// The Transformer allocates from it, the memory replay and the FLOP counts read their parameters, gradients,
// optimizer state, shards and gathers from it, and `estimate` sums its parameter table from it. Adding a
// parameter is one row here (and its use in the model's forward and backward).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "runtime/tensor.h"

namespace reckon {

// What a parameter is for: its initialisation (gains are ones, biases zeros, matrices N(0, 0.02²)), whether amp-bf16
// casts it to a bf16 copy for a matmul (biases too, as autocast's F.linear), and which row of `estimate`'s parameter
// table it counts in (attention biases: the attention row).
enum class ParamRole { token_embedding, position_embedding, norm_gain, norm_bias, attention, ffn, lm_head };

struct ParamSpec {
  const char* suffix;  // the key within its layer ("attn.wq.weight"), or the whole key outside layers (a literal)
  int layer;           // -1 outside the layers
  int unit;            // ZeRO's unit (model/transformer.h ParameterHooks): 0 embeddings, 1 + layer, L + 1 the head
  ParamRole role;
  int rank;                       // 1 (a gain) or 2 (a matrix, nn.Linear's (out, in) or an embedding's (rows, D))
  std::array<int64_t, 2> dims{};  // dims[1] = 1 when rank = 1
  std::string name() const;       // the state-dict key: "tok_emb.weight", "layers.3.attn.wq.weight"
  Shape shape() const;
  int64_t numel() const { return dims[0] * dims[1]; }  // checked when the layout is built
  bool is_matmul_weight() const {
    return role != ParamRole::norm_gain && role != ParamRole::norm_bias && role != ParamRole::position_embedding;
  }
  bool is_bias() const { return rank == 1 && role != ParamRole::norm_gain; }  // a linear's or a norm's: zeros at init
};

// The parameters of one layer, as indices into ParameterLayout::params (-1: absent, e.g. w3 in a plain MLP).
struct LayerParamIndex {
  int attn_norm = -1, wq = -1, wk = -1, wv = -1, wo = -1, ffn_norm = -1, w1 = -1, w3 = -1, w2 = -1;
  int bq = -1, bk = -1, bv = -1, bo = -1;       // attention biases (attention_bias)
  int b1 = -1, b3 = -1, b2 = -1;                // FFN biases (mlp_bias; b3 only when gated)
  int attn_norm_bias = -1, ffn_norm_bias = -1;  // LayerNorm's β (norm_bias)
  // Norms after each sublayer (norm_placement post, sandwich) and their β.
  int attn_post_norm = -1, ffn_post_norm = -1, attn_post_norm_bias = -1, ffn_post_norm_bias = -1;
  int q_norm = -1, k_norm = -1;  // qk_norm: RMSNorm gains over the q (H·head_dim) and k (KV·head_dim) projections
};

struct ParameterLayout {
  std::vector<ParamSpec> params;
  // Unit u's parameters are [units[u].first, units[u].second); a tied head has no parameter of its own beyond
  // final_norm and reads unit 0's tok_emb.
  std::vector<std::pair<int, int>> units;
  std::vector<LayerParamIndex> layers;
  int tok_emb = -1, pos_emb = -1, final_norm = -1, final_norm_bias = -1;
  int lm_head = -1;  // = tok_emb when the embeddings are tied
  int head_unit() const { return static_cast<int>(units.size()) - 1; }

  int64_t total() const;               // the parameter count (throws SizeOverflow past int64)
  std::vector<int64_t> sizes() const;  // numel of each parameter, in order
  int64_t role_total(ParamRole role) const;
};

// FSDP's mixed precision (MixedPrecision(param_dtype=bf16), amp-bf16 at zero_stage 3): the parameters ZeRO-3 gathers
// in bf16 — each rank casts its float32 shard and the all-gather fills "<name>.bf16", the matmul operand itself, freed
// with its unit after use — instead of gathering float32 and keeping autocast's bf16 copy from forward to backward:
// every matmul weight and linear bias, not the token table (the embedding reads it in float32; tied, the head casts
// it at each use) and not the norms' parameters (read in float32).
bool gathered_in_bf16(const ModelConfig& config, const ParamSpec& spec);
// Whether `config` runs that way at all (amp-bf16 at zero_stage 3).
bool gathers_bf16_operands(const ModelConfig& config);

// The layout of `config`'s shape fields (vocab_size, context_length for learned positions, num_layers, d_model,
// num_heads, num_kv_heads and head_dim for the attention widths,
// d_ff, ffn, tie_embeddings, position); sizes are checked (SizeOverflow past int64).
ParameterLayout parameter_layout(const ModelShape& shape);

}  // namespace reckon
