// The process-wide oneDNN CPU engine and stream (created on first use).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

namespace reckon {

dnnl::engine& onednn_engine();
dnnl::stream& onednn_stream();

}  // namespace reckon
