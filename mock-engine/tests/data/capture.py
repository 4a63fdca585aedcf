"""Encode sample engine-core messages with vLLM's OWN encoder and structs.

The Rust wire tests decode these bytes into our types and compare our own
encoding against them. Run with the vLLM venv whose layout you capture:

    ~/.cache/genconform/vllm-0.32.0/bin/python mock-engine/tests/data/capture.py

It writes tests/data/v<vllm version>/*.bin next to this file. Every value here
is mirrored by an expectation in tests/wire_roundtrip.rs; change both together.
"""

import os
import pathlib

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from vllm import SamplingParams  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402
from vllm.v1.engine import (  # noqa: E402
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreReadyResponse,
    EngineCoreRequest,
    FinishReason,
    UtilityOutput,
)
from vllm.v1.engine.utils import EngineHandshakeMetadata, EngineZmqAddresses  # noqa: E402
from vllm.v1.metrics.stats import PrefillStats  # noqa: E402
from vllm.v1.outputs import LogprobsLists, LogprobsTensors  # noqa: E402
from vllm.v1.serial_utils import MsgpackEncoder, UtilityResult  # noqa: E402
from vllm.version import __version__ as VLLM_VERSION  # noqa: E402

OUT = pathlib.Path(__file__).parent / f"v{VLLM_VERSION}"
OUT.mkdir(exist_ok=True)
enc = MsgpackEncoder()


def write(name, frames):
    """One file per message: single-frame payloads only (asserted)."""
    if isinstance(frames, (bytes, bytearray)):
        frames = [frames]
    assert len(frames) == 1, f"{name}: {len(frames)} frames (arrays went out of band)"
    (OUT / f"{name}.bin").write_bytes(bytes(frames[0]))
    print(name, len(frames[0]), "bytes")


# Handshake socket (core.py startup_handshake / _perform_handshake).
write("hello", msgspec.msgpack.encode({"status": "HELLO", "local": False, "headless": True}))
write("ready", msgspec.msgpack.encode({"status": "READY", "local": False, "headless": True}))
write(
    "init",
    msgspec.msgpack.encode(
        EngineHandshakeMetadata(
            addresses=EngineZmqAddresses(
                inputs=["tcp://127.0.0.1:5001"],
                outputs=["tcp://127.0.0.1:5002"],
            ),
            parallel_config={},
        )
    ),
)
write(
    "ready_response",
    msgspec.msgpack.encode(
        EngineCoreReadyResponse(
            max_model_len=2048,
            num_gpu_blocks=1024,
            block_size=16,
            dp_stats_address=None,
            dtype="float32",
            vllm_version=VLLM_VERSION,
            world_size=1,
            data_parallel_size=1,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            decode_context_parallel_size=1,
            data_parallel_rank=0,
            max_num_seqs=256,
            max_num_batched_tokens=8192,
            instance_id="mock-engine",
            supports_lora=False,
            max_loras=0,
        )
    ),
)

# Input socket payloads (core_client.py).
sp = SamplingParams(max_tokens=5, logprobs=2, prompt_logprobs=1)
sp.output_kind = RequestOutputKind.DELTA
write(
    "add_request",
    enc.encode(
        EngineCoreRequest(
            request_id="cmpl-abc-0-1a2b3c4d",
            prompt_token_ids=[1, 2, 3],
            mm_features=None,
            sampling_params=sp,
            pooling_params=None,
            arrival_time=1700000000.25,
            lora_request=None,
            cache_salt=None,
            data_parallel_rank=None,
            client_index=0,
            external_req_id="cmpl-abc-0",
        )
    ),
)
# Every trailing field set: the longest array the Python frontend can send.
write(
    "add_request_long",
    enc.encode(
        EngineCoreRequest(
            request_id="r-long",
            prompt_token_ids=[7],
            mm_features=None,
            sampling_params=SamplingParams(max_tokens=None),
            pooling_params=None,
            arrival_time=2.5,
            lora_request=None,
            cache_salt=None,
            data_parallel_rank=None,
            client_index=1,
            priority=3,
            external_req_id="r",
            abort_immediately=True,
            session_id="s-1",
        )
    ),
)
write("abort", enc.encode(["cmpl-abc-0-1a2b3c4d", "other"]))
write("utility_call", enc.encode((0, 7, "get_supported_tasks", ())))

# Output socket payloads (core.py process_output_sockets).
write(
    "outputs_tokens",
    enc.encode(
        EngineCoreOutputs(
            engine_index=0,
            outputs=[EngineCoreOutput(request_id="cmpl-abc-0-1a2b3c4d", new_token_ids=[33])],
            timestamp=12.5,
        )
    ),
)
write(
    "outputs_finished",
    enc.encode(
        EngineCoreOutputs(
            engine_index=0,
            outputs=[
                EngineCoreOutput(
                    request_id="r1",
                    new_token_ids=[44, 45],
                    finish_reason=FinishReason.STOP,
                    stop_reason=44,
                    kv_transfer_params={"do_remote_prefill": False, "remote_port": 7},
                    prefill_stats=PrefillStats(
                        num_prompt_tokens=3,
                        num_computed_tokens=1,
                        num_cached_tokens=2,
                        num_local_cached_tokens=2,
                        num_external_cached_tokens=0,
                        num_cache_creation_tokens=0,
                    ),
                ),
                EngineCoreOutput(
                    request_id="r2",
                    new_token_ids=[],
                    finish_reason=FinishReason.LENGTH,
                    stop_reason="</s>",
                ),
            ],
            timestamp=13.0,
        )
    ),
)
# Two sampled positions, top-2: dtypes as the sampler makes them (token ids
# int32, logprobs float32, ranks int64).
write(
    "outputs_logprobs",
    enc.encode(
        EngineCoreOutputs(
            engine_index=0,
            outputs=[
                EngineCoreOutput(
                    request_id="lp",
                    new_token_ids=[33, 44],
                    new_logprobs=LogprobsLists(
                        np.array([[33, 33, 34], [44, 44, 46]], dtype=np.int32),
                        np.array([[-0.125, -0.125, -2.0], [-0.5, -0.5, -2.0]], dtype=np.float32),
                        np.array([1, 1], dtype=np.int64),
                        None,
                    ),
                    new_prompt_logprobs_tensors=LogprobsTensors(
                        torch.tensor([[2, 2], [3, 3]], dtype=torch.int32),
                        torch.tensor([[-0.125, -0.125], [-0.25, -0.25]], dtype=torch.float32),
                        torch.tensor([1, 1], dtype=torch.int64),
                        None,
                    ),
                )
            ],
            timestamp=14.0,
        )
    ),
)
write(
    "outputs_utility",
    enc.encode(
        EngineCoreOutputs(
            engine_index=0,
            utility_output=UtilityOutput(call_id=7, result=UtilityResult(["generate"])),
            timestamp=15.0,
        )
    ),
)
write(
    "outputs_utility_none",
    enc.encode(
        EngineCoreOutputs(
            engine_index=0,
            utility_output=UtilityOutput(call_id=8, result=UtilityResult(None)),
            timestamp=16.0,
        )
    ),
)
