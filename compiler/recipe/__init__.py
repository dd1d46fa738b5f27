"""The recipe between composition and compile: `edits` holds every change made to a composed config (an ONNX
file's IO read in, dims fitted to the machine, the input domain probed), and `Resolved` is what the compile
takes once those are done: the config made read-only, the one IOSpec and the one EnginePlan of the run."""
