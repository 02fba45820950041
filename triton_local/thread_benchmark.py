"""Compare ONNX Runtime thread and instance settings behind the local Triton.

    python -m triton_local.thread_benchmark [--seconds 3] [--concurrency 1 8 32]

Serves one small MLP (26 -> 64 -> 32 -> 1, the size of the project's models)
under several configs from a tmp repository on free ports, and drives each
with closed-loop single-row gRPC requests from this process.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from triton_local.server import LaunchOptions, Ports, start_triton

WIDTH = 26
# name -> (intra_op_thread_count, inter_op_thread_count, instance count)
VARIANTS = {
    "intra1_inter1_x1": (1, 1, 1),
    "ort_default_x1": (0, 0, 1),
    "intra1_inter1_x2": (1, 1, 2),
    "ort_default_x2": (0, 0, 2),
}

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 1024
input [ {{ name: "features" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [ {{ name: "score" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 200 }}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{intra}" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "{inter}" }} }}
"""


def write_mlp(path: Path, sizes: tuple[int, ...] = (WIDTH, 64, 32, 1)) -> None:
    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    current = "features"
    for layer, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weight = rng.normal(scale=fan_in**-0.5, size=(fan_in, fan_out))
        initializers += [
            numpy_helper.from_array(weight.astype(np.float32), f"w{layer}"),
            numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{layer}"),
        ]
        last = layer == len(sizes) - 2
        nodes += [
            helper.make_node("MatMul", [current, f"w{layer}"], [f"m{layer}"]),
            helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"a{layer}"]),
            helper.make_node(
                "Sigmoid" if last else "Relu",
                [f"a{layer}"],
                ["score" if last else f"h{layer}"],
            ),
        ]
        current = f"h{layer}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_repository(root: Path) -> Path:
    for name, (intra, inter, instances) in VARIANTS.items():
        text = CONFIG.format(
            name=name, width=WIDTH, instances=instances, intra=intra, inter=inter
        )
        (root / name).mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(text)
        write_mlp(root / name / "1" / "model.onnx")
    return root


def free_ports() -> Ports:
    sockets = [socket.socket() for _ in range(3)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return Ports(grpc=ports[0], http=ports[1], metrics=ports[2])


async def drive(url: str, model: str, concurrency: int, seconds: float) -> str:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(
        url, channel_args=[("grpc.enable_http_proxy", 0)]
    )
    rows = np.random.default_rng(1).normal(size=(4096, WIDTH)).astype(np.float32)
    latencies: list[float] = []

    async def worker(offset: int, deadline: float) -> None:
        index = offset
        while time.perf_counter() < deadline:
            features = grpcclient.InferInput("features", [1, WIDTH], "FP32")
            features.set_data_from_numpy(rows[index % len(rows)][None, :])
            started = time.perf_counter()
            await client.infer(model, [features])
            latencies.append(time.perf_counter() - started)
            index += concurrency

    await asyncio.gather(*(worker(i, time.perf_counter() + 0.5) for i in range(4)))
    latencies.clear()
    before = await _counts(client, model)
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(worker(i, deadline) for i in range(concurrency)))
    inferences, executions = np.subtract(await _counts(client, model), before)
    await client.close()

    ms = sorted(latency * 1000 for latency in latencies)
    p99 = ms[int(len(ms) * 0.99) - 1]
    batch = inferences / max(1, executions)
    return (
        f"{model:18} c={concurrency:<3} {len(ms) / seconds:8.0f} inf/s  "
        f"p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  "
        f"mean batch {batch:5.1f}"
    )


async def _counts(client: Any, model: str) -> tuple[int, int]:
    stats = await client.get_inference_statistics(model, as_json=True)
    version = stats["model_stats"][0]
    return int(version["inference_count"]), int(version["execution_count"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        options = LaunchOptions(
            repository=build_repository(Path(tmp) / "repository"),
            run_dir=Path(tmp) / "run",
            ports=free_ports(),
        )
        with start_triton(options) as handle:
            for concurrency in args.concurrency:
                for model in VARIANTS:
                    line = asyncio.run(
                        drive(handle.grpc_url, model, concurrency, args.seconds)
                    )
                    print(line, flush=True)


if __name__ == "__main__":
    main()
