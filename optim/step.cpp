#include "optim/step.h"

#include "model/data.h"
#include "optim/data_parallel.h"
#include "runtime/check.h"
#include "runtime/comm.h"

namespace reckon {

StepOptimizer::StepOptimizer(Transformer& model, const AdamWConfig& config, bool data_parallel) {
  if (data_parallel) broadcast_parameters(model.parameters());
  const int64_t stage = model.config().zero_stage;
  if (stage >= 1)
    zero_ = std::make_unique<ZeroOptimizer>(model, config, stage, comm_rank(), comm_size());
  else if (model.config().dtypes().master_weights)
    master_ = std::make_unique<AdamWMasterWeights>(model.parameters(), config);
  else
    adamw_ = std::make_unique<AdamW>(model.parameters(), config);
}

void StepOptimizer::step() {
  if (zero_)
    zero_->step();
  else if (master_)
    master_->step();
  else
    adamw_->step();
}

std::vector<std::pair<std::string, Tensor>> StepOptimizer::state_tensors() {
  check_arg(!zero_, "checkpoints of a sharded optimizer (zero_stage ≥ 1) are not built yet");
  return master_ ? master_->state_tensors() : adamw_->state_tensors();
}

void StepOptimizer::set_steps_taken(int64_t steps) {
  check_arg(!zero_, "checkpoints of a sharded optimizer (zero_stage ≥ 1) are not built yet");
  if (master_)
    master_->set_steps_taken(steps);
  else
    adamw_->set_steps_taken(steps);
}

int64_t StepOptimizer::steps_taken() const {
  return zero_ ? zero_->steps_taken() : master_ ? master_->steps_taken() : adamw_->steps_taken();
}

double training_step(Transformer& model, StepOptimizer& optimizer, const Tensor& tokens, const Tensor& targets,
                     bool data_parallel, const MicroBatchFill& fill) {
  if (model.config().zero_stage < 2) {  // stages 2, 3 create their gradients zeroed in backward
    PhaseScope phase(Phase::optimizer);
    model.zero_grad();
  }
  const int64_t micro_batches = model.config().micro_batches();
  double loss = 0;
  for (int64_t k = 0; k < micro_batches; ++k) {
    if (fill) fill(k);
    if (optimizer.zero() != nullptr) optimizer.zero()->set_accumulating(k > 0);
    loss += model.forward(tokens, targets);
    model.backward(micro_batches);
  }
  loss /= static_cast<double>(micro_batches);
  if (data_parallel) {
    const int64_t stage = model.config().zero_stage, bucket_bytes = model.config().bucket_bytes();
    if (stage == 0)
      all_reduce_gradients(model.parameters(), bucket_bytes);
    else if (stage == 1)
      reduce_scatter_gradients(model.parameters(), bucket_bytes);
    loss = all_reduce_sum_scalar(loss) / comm_size();
  }
  optimizer.step();
  return loss;
}

TrainingSession::TrainingSession(const TrainConfig& config, bool data_parallel)
    : model(config.model, config.seed),
      optimizer(model, config.optim, data_parallel),
      tokens(Tensor::empty({config.model.batch_size, config.model.context_length}, Category::activation, "batch.tokens",
                           DType::i32)),
      targets(Tensor::empty({config.model.batch_size, config.model.context_length}, Category::activation,
                            "batch.targets", DType::i32)),
      data_parallel(data_parallel) {}

StepMeasurement measure_steady_step(const TrainConfig& config, bool data_parallel) {
  StepMeasurement out;
  TrainingSession run(config, data_parallel);
  TokenData data = TokenData::random(config.model.vocab_size, config.seed);
  const int64_t b = config.model.batch_size, ranks = data_parallel ? comm_size() : 1,
                rank = data_parallel ? comm_rank() : 0;
  auto batches_of = [&](int64_t step) {  // micro-batch k: rows k·N·b + rank·b … of the step's K·N·b
    return [&, step](int64_t k) {
      data.fill_batch_rows(run.tokens, run.targets, step, (k * ranks + rank) * b,
                           config.model.micro_batches() * ranks * b);
    };
  };
  run.step(batches_of(0));
  counters().reset();
  tracker().clear_timeline();  // peaks reset; what lives now is the timeline's base, not an event of the step
  out.loss = run.step(batches_of(1));
  out.events = tracker().events();
  out.memory = tracker().stats();
  out.live_at_peak = tracker().live_at_peak();
  for (const LiveBlock& b : out.live_at_peak) {
    if (b.name.rfind("onednn.scratchpad.", 0) == 0) out.scratchpad_at_peak += b.allocated_bytes;
  }
  out.counts = counters().by_op();
  return out;
}

}  // namespace reckon
