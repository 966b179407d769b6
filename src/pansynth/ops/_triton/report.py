"""What the compiler makes of the Triton kernels, without a GPU: ``python -m pansynth.ops._triton.report``.

Every kernel is compiled for sm_90 (H100/H200: ``triton.compile`` with
``GPUTarget("cuda", 90, 32)``, the divisibility hints a real launch of the generator's shapes
gives, then the ``ptxas`` inside the triton wheel), for each dtype (fp32 as TF32, bf16, fp16)
and each of its autotuning configurations, and the cubin is read back with the wheel's
``cuobjdump``. One row per (kernel, dtype, configuration):

- ``registers`` per thread (255 is the ceiling: one block of 8 warps per SM);
- ``spills``: bytes stored to local memory (the ``STL`` instructions' widths: register spills);
- ``shared_bytes``: shared memory per program (the software pipeline's stages), and ``fits_shared``:
  whether it is within the target's shared memory per block (227 KB on sm_90; the autotuner prunes
  the configurations that are not, e.g. fp32 128x256x64 at 3 stages, 288 KB);
- ``wgmma``: whether the dots became Hopper's warpgroup MMA (``HGMMA`` in the SASS);
- ``loop_instructions``: SASS instructions of one iteration of the main loop (the innermost
  loop around the MMAs, or the longest loop for kernels without a dot), and ``main_loops``:
  how many such loops the kernel has (1 when taps and channel blocks share one pipelined loop).

``--json`` prints one JSON object per row; ``--quick`` compiles only the configurations named by
the performance targets (conv 128x128x64 at 8 warps, weight gradient 128x128x64) and the largest
tile the tuner times at the generator's big stages (128x256x64); ``--capability`` another target. Compiling every
configuration takes minutes (Triton caches the kernels; a second run only reads them back).
``make bench`` prints the table. Not imported by the library.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

DTYPES = ("fp32", "bf16", "fp16")
# The configurations named by the performance targets (conv bf16 128x128x64 at 8 warps, weight gradient
# 128x128x64), and the largest tile timed at the generator's 16x32 to 64x128 stages at batch 8.
QUICK_CONFIGS = {
    "conv_forward": [(128, 128, 64, 8, 3), (128, 128, 32, 8, 3), (128, 256, 64, 8, 3)],
    "conv_input_grad": [(128, 128, 64, 8, 3)],
    "conv_weight_grad": [(64, 64, 64, 4, 3), (128, 128, 64, 8, 2), (128, 128, 64, 8, 3)],
    "upsample_forward": [(64, 128, 8, 2)],
    "upsample_backward": [(64, 128, 8, 2)],
    "conv_grad_prescale": [(64, 128, 8, 1)],
}
# Shared memory a block may opt in to (bytes), by compute capability (CUDA programming guide).
SHARED_BYTES = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


@dataclass(frozen=True)
class KernelRow:
    kernel: str
    dtype: str
    config: str
    registers: int
    spills: int
    shared_bytes: int
    fits_shared: bool
    wgmma: bool
    loop_instructions: int | None
    main_loops: int
    instructions: int


def _bin(tool: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", tool)


def kernel_specs() -> list[tuple[str, object, list, dict[str, str], dict]]:
    """(name, jit function, configurations, pointer types by dtype placeholder, constexprs) per kernel."""
    from pansynth.ops._triton import _kernels

    conv_pointers = {
        "x_ptr": "D", "ids_ptr": "*i64", "w_ptr": "D", "bias_ptr": "*fp32", "row_scale_ptr": "*fp32",
        "out_ptr": "D", "scale_ptr": "*fp32", "mask_ptr": "*i32",
    }  # fmt: skip
    conv = dict(KSIZE=3, UPCAST=False, INT32_OFFSETS=True)
    return [
        ("conv_forward", _kernels.panoptic_conv_kernel, _kernels.CONV_CONFIGS, conv_pointers,
         dict(conv, FORWARD=True, HAS_BIAS=True, SCALE_INPUT=False)),
        ("conv_input_grad", _kernels.panoptic_conv_kernel, _kernels.CONV_CONFIGS, conv_pointers,
         dict(conv, FORWARD=False, HAS_BIAS=False, SCALE_INPUT=True)),
        ("conv_weight_grad", _kernels.panoptic_conv_weight_grad_kernel, _kernels.WEIGHT_GRAD_CONFIGS,
         {"g_ptr": "D", "x_ptr": "D", "mask_ptr": "*i32", "partial_ptr": "*fp32"},
         dict(KSIZE=3, UPCAST=False, INT32_OFFSETS=True)),
        ("upsample_forward", _kernels.panoptic_upsample_kernel, _kernels.UPSAMPLE_CONFIGS,
         {"f_ptr": "D", "low_ptr": "*i64", "high_ptr": "*i64", "out_ptr": "D", "choice_ptr": "*u8"},
         dict(stride_fc=1)),
        ("upsample_backward", _kernels.panoptic_upsample_backward_kernel, _kernels.UPSAMPLE_CONFIGS,
         {"g_ptr": "D", "choice_ptr": "*u8", "out_ptr": "D"}, dict(stride_gc=1)),
        ("conv_grad_prescale", _kernels.panoptic_conv_grad_prescale_kernel, _kernels.PRESCALE_CONFIGS,
         {"g_ptr": "D", "scale_ptr": "*fp32", "out_ptr": "D", "bias_ptr": "*fp32"}, dict(HAS_BIAS=True, stride_go=1)),
    ]  # fmt: skip


def config_name(config) -> str:
    blocks = "x".join(str(value) for key, value in config.kwargs.items() if key.startswith("BLOCK"))
    return f"{blocks}, {config.num_warps} warps, {config.num_stages} stages"


def _config_tuple(config) -> tuple[int, ...]:
    blocks = tuple(value for key, value in config.kwargs.items() if key.startswith("BLOCK"))
    return (*blocks, config.num_warps, config.num_stages)


def variants(quick: bool = False, kernels: tuple[str, ...] | None = None) -> list[tuple[str, str, int]]:
    """(kernel, dtype, configuration index) of every variant the report compiles."""
    out = []
    for name, _, configs, _, _ in kernel_specs():
        if kernels is not None and name not in kernels:
            continue
        for index, config in enumerate(configs):
            if quick and _config_tuple(config) not in QUICK_CONFIGS[name]:
                continue
            out += [(name, dtype, index) for dtype in DTYPES]
    return out


def compile_variant(name: str, dtype: str, index: int, capability: int = 90, **overrides):
    """Compile one variant for ``sm_<capability>``: the triton CompiledKernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pansynth.ops._triton import _kernels

    if _kernels.INTERPRET:
        raise RuntimeError("compiling for a GPU needs TRITON_INTERPRET unset")
    spec = {spec[0]: spec for spec in kernel_specs()}[name]
    _, fn, configs, pointers, constants = spec
    config = configs[index]
    constants = {**constants, **config.kwargs, **overrides}
    if "DOT_PRECISION" in fn.arg_names:
        constants["DOT_PRECISION"] = "tf32" if dtype == "fp32" else "ieee"
    if "W_FORWARD_LAYOUT" in fn.arg_names and "W_FORWARD_LAYOUT" not in overrides:
        # what the launcher picks: the input gradient reads the forward's weight rows in 16 bits
        constants["W_FORWARD_LAYOUT"] = name == "conv_input_grad" and dtype != "fp32"
    signature, attrs = {}, {}
    for position, arg in enumerate(fn.arg_names):
        if arg in constants:
            signature[arg] = "constexpr"
            continue
        if arg.endswith("_ptr"):
            signature[arg] = f"*{dtype}" if pointers[arg] == "D" else pointers[arg]
        else:  # a launch passes Python ints below 2^31 as i32 (the generator's shapes)
            signature[arg] = "i32"
        # What a launch on the generator's shapes specialises on: 16-byte aligned pointers,
        # channel counts and strides that are multiples of 16.
        if arg.endswith("_ptr") or arg.startswith("stride_") or arg in ("C", "O"):
            attrs[(position,)] = [["tt.divisibility", 16]]
    constants = {key: value for key, value in constants.items() if key in fn.arg_names}
    source = ASTSource(fn, signature, constexprs=constants, attrs=attrs)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


# --- reading the cubin ----------------------------------------------------------------------------

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def parse_sass(sass: str) -> list[tuple[int, str, str]]:
    """(address, opcode, operands) of every instruction in a ``cuobjdump -sass`` listing."""
    return [(int(m.group(1), 16), m.group(3), m.group(4)) for m in _INSTRUCTION.finditer(sass)]


def loops(instructions: list[tuple[int, str, str]]) -> list[tuple[int, int]]:
    """(first, last) instruction index of every loop: a branch back to an earlier address."""
    index_of = {address: i for i, (address, _, _) in enumerate(instructions)}
    found = []
    for i, (address, opcode, operands) in enumerate(instructions):
        target = re.search(r"0x([0-9a-f]+)", operands) if opcode.startswith("BRA") else None
        if target and int(target.group(1), 16) < address and int(target.group(1), 16) in index_of:
            found.append((index_of[int(target.group(1), 16)], i))
    return found


def main_loop_stats(instructions: list[tuple[int, str, str]]) -> tuple[int | None, int]:
    """(instructions per iteration of the main loop, number of main loops).

    Main loops are the innermost loops that hold an MMA (HGMMA, HMMA); in a kernel without
    MMAs, the longest loop. None when the kernel has no loop."""
    found = loops(instructions)
    if not found:
        return None, 0

    def has_mma(loop):
        return any(op.startswith(("HGMMA", "HMMA")) for _, op, _ in instructions[loop[0] : loop[1] + 1])

    with_mma = [loop for loop in found if has_mma(loop)]
    innermost = [
        loop for loop in with_mma if not any(o != loop and loop[0] <= o[0] and o[1] <= loop[1] for o in with_mma)
    ]
    if innermost:
        return max(last - first + 1 for first, last in innermost), len(innermost)
    return max(last - first + 1 for first, last in found), 1


def spill_bytes(instructions: list[tuple[int, str, str]]) -> int:
    """Bytes written to local memory (``STL``, ``STL.64``, ``STL.128``): what ptxas reports as spill stores."""
    total = 0
    for _, opcode, _ in instructions:
        if opcode.startswith("STL"):
            width = re.search(r"\.(64|128)", opcode)
            total += int(width.group(1)) // 8 if width else 4
    return total


def analyse(kernel) -> dict:
    """registers, spills, shared_bytes, wgmma, loop_instructions, main_loops, instructions of a CompiledKernel."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "kernel.cubin")
        with open(path, "wb") as handle:
            handle.write(kernel.asm["cubin"])
        usage = subprocess.run([_bin("cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True)
        sass = subprocess.run([_bin("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
    registers = int(re.search(r"REG:(\d+)", usage.stdout).group(1))
    instructions = parse_sass(sass)
    loop_instructions, main_loops = main_loop_stats(instructions)
    return dict(
        registers=registers,
        spills=spill_bytes(instructions),
        shared_bytes=int(kernel.metadata.shared),
        wgmma=any(op.startswith("HGMMA") for _, op, _ in instructions),
        loop_instructions=loop_instructions,
        main_loops=main_loops,
        instructions=len(instructions),
    )


def report_row(variant: tuple[str, str, int], capability: int = 90) -> KernelRow:
    name, dtype, index = variant
    spec = {spec[0]: spec for spec in kernel_specs()}[name]
    figures = analyse(compile_variant(name, dtype, index, capability))
    fits_shared = figures["shared_bytes"] <= SHARED_BYTES.get(capability, SHARED_BYTES[90])
    dtype_name = "fp32/tf32" if dtype == "fp32" else dtype
    return KernelRow(name, dtype_name, config_name(spec[2][index]), fits_shared=fits_shared, **figures)


def report(
    quick: bool = False, capability: int = 90, workers: int | None = None, kernels: tuple[str, ...] | None = None
) -> list[KernelRow]:
    """Compile and analyse every variant (``quick``: the preferred configurations only), in parallel."""
    todo = variants(quick, kernels)
    workers = workers or min(len(todo), os.cpu_count() or 1)
    if workers <= 1:
        return [report_row(variant, capability) for variant in todo]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(report_row, todo, [capability] * len(todo)))


def format_table(rows: list[KernelRow]) -> str:
    lines = [
        "| kernel | dtype | config | registers | spills (B) | shared (KB) | fits | wgmma | loop instructions "
        "| main loops |",
        "|---|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        loop = "-" if row.loop_instructions is None else row.loop_instructions
        lines.append(
            f"| {row.kernel} | {row.dtype} | {row.config} | {row.registers} | {row.spills} | "
            f"{row.shared_bytes / 1024:.0f} | {'yes' if row.fits_shared else 'no'} | {'yes' if row.wgmma else 'no'} | "
            f"{loop} | {row.main_loops} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pansynth.ops._triton.report", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel and configuration")
    parser.add_argument("--quick", action="store_true", help="only the configurations preferred for the generator")
    parser.add_argument("--capability", type=int, default=90, help="CUDA compute capability to compile for (90)")
    parser.add_argument("--kernels", help="comma-separated subset of " + ",".join(QUICK_CONFIGS))
    parser.add_argument("--workers", type=int, help="compiler processes (default: one per CPU)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("the report compiles for a GPU: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        print("the report needs triton with its CUDA backend (pip install triton)", file=sys.stderr)
        return 2
    kernels = tuple(args.kernels.split(",")) if args.kernels else None
    if kernels and set(kernels) - set(QUICK_CONFIGS):
        print(f"--kernels takes a subset of {','.join(QUICK_CONFIGS)}, got {args.kernels!r}", file=sys.stderr)
        return 2
    rows = report(args.quick, args.capability, args.workers, kernels)
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        print(f"Triton kernels compiled for sm_{args.capability} (no GPU needed)")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
