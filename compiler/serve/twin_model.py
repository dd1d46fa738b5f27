"""The twin's model.py: Triton's Python backend serving the compiler's engine file through onnxruntime, opened with
the runtime settings the compiler verified it with (`<engine>.runtime.json`: providers with their options, graph
level, threads, disabled optimizers).

The serve stage copies this file into the repository as `<model>/1/model.py`; it imports nothing of the compiler,
so the repository runs in any Triton with the Python backend and onnxruntime. A batch the dynamic batcher formed is
run as one call, as the onnxruntime backend does.
"""

import json
import os

import numpy as np

LEVELS = ("disable", "basic", "extended", "all")


def _session(model_path, settings, device_id):
    import onnxruntime as ort

    session = settings["session"]
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, {
        "disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
        "all": "ORT_ENABLE_ALL"}[session["graph_optimization_level"]])
    threads = session["intra_op_num_threads"]
    options.intra_op_num_threads = 0 if threads == "auto" else int(threads)
    options.inter_op_num_threads = int(session["inter_op_num_threads"])
    options.log_severity_level = 3
    available = set(ort.get_available_providers())
    providers = []
    for name, provider_options in settings["providers"]:
        if name not in available:
            continue
        if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            provider_options = {**provider_options, "device_id": str(device_id)}
        providers.append((name, provider_options) if provider_options else name)
    return ort.InferenceSession(model_path, options, providers=providers or ["CPUExecutionProvider"],
                                disabled_optimizers=session["disabled_optimizers"])


def _strings_in(array):
    """Triton hands BYTES tensors over as bytes objects; onnxruntime takes str."""
    return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(array)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        settings_file = parameters.get("runtime_settings")
        settings = {"session": {"graph_optimization_level": "all", "intra_op_num_threads": 0,
                                "inter_op_num_threads": 0, "disabled_optimizers": []},
                    "providers": [["CPUExecutionProvider", {}]]}
        if settings_file:
            with open(os.path.join(folder, settings_file)) as handle:
                settings = json.load(handle)
        device = int(args.get("model_instance_device_id") or 0) if args.get("model_instance_kind") == "GPU" else 0
        self.session = _session(os.path.join(folder, parameters["engine_file"]), settings, device)
        self.inputs = [i["name"] for i in config["input"]]
        self.strings = {i["name"] for i in config["input"] if i["data_type"] == "TYPE_STRING"}
        self.outputs = [o["name"] for o in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        feeds = []
        for request in requests:
            feed = {}
            for name in self.inputs:
                array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                feed[name] = _strings_in(array) if name in self.strings else array
            feeds.append(feed)
        try:
            results = self._run(feeds)
        except Exception as exc:  # the request gets onnxruntime's reason
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(self.outputs, r)])
                for r in results]

    def _run(self, feeds):
        """One call for the whole batch where the requests' shapes allow it (the batch dim leads), else one each."""
        same = all(f[n].shape[1:] == feeds[0][n].shape[1:] for f in feeds for n in self.inputs)
        if not (self.batched and len(feeds) > 1 and same):
            return [self.session.run(self.outputs, f) for f in feeds]
        joined = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
        outputs = self.session.run(self.outputs, joined)
        results, start = [], 0
        for f in feeds:
            size = f[self.inputs[0]].shape[0]
            results.append([o[start:start + size] for o in outputs])
            start += size
        return results
