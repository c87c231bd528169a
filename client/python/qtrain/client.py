"""qtrain.Client: the qtrain.v1.Trainer service with numpy arrays and Python dicts.

Every method raises QtrainError (with the server's gRPC status code and message) when the server
or the channel fails, and ValueError for local mistakes (a malformed configuration, an array
without a wire type). Configuration (model, rules, optimizer) may be given as protobuf messages,
dicts in their JSON form, or JSON strings.
"""

import functools
import json
import os

import grpc
import numpy as np
from google.protobuf import json_format

from qtrain import presets
from qtrain.grpc_protos import health_pb2, health_pb2_grpc
from qtrain.safetensors import load_safetensors, save_safetensors
from qtrain.tensors import from_tensor, to_tensor
from qtrain.architectures import torchvision_architecture
from qtrain.hf import read_hf_config, read_hf_weights
from qtrain.torch_import import torch_module_map
from qtrain.v1 import model_pb2, optimizer_pb2, rules_pb2, trainer_service_pb2 as pb
from qtrain.v1 import trainer_service_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
_CHUNK = 1 << 20


class QtrainError(Exception):
    """A failed call: `code` is the grpc.StatusCode, `message` the server's explanation."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


# Every call that names a session carries it in this metadata header too, so that a
# consistent-hash proxy in front of several servers routes it to the replica hosting the session
# (deploy/nginx, docs/scaling.md).
SESSION_HEADER = "qtrain-session"


def _route(session_id):
    return ((SESSION_HEADER, session_id),) if session_id else None


def _wrap(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as e:
            raise QtrainError(e.code(), e.details()) from None
    return call


# Which presets a string names, by the message it stands for.
_PRESET_KINDS = {"ModelSpec": "models", "RuleSet": "rules", "OptimizerConfig": "optimizers"}


def _message(value, cls):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    kind = _PRESET_KINDS.get(cls.DESCRIPTOR.name)
    if isinstance(value, str) and kind and not value.lstrip().startswith("{"):
        value = presets.lookup(kind, value)  # "qat-int8", "mlp", "adamw"
    try:
        if isinstance(value, str):
            value = json.loads(value)
        return json_format.ParseDict(value, cls())
    except (json.JSONDecodeError, json_format.ParseError) as e:
        raise ValueError(f"not a valid {cls.DESCRIPTOR.full_name}: {e}") from None


class _Requests:
    """The request messages of a client stream: `cls(**build(item))` per item, the first also
    naming the session (a stream without items still sends one message naming it).

    Requests are built on gRPC's sending thread; an exception raised there (say a ValueError
    from to_tensor) would surface as a CANCELLED call, so it is kept and re-raised by `check`."""

    def __init__(self, session_id, items, cls, build, first=None):
        self._session_id, self._items, self._cls, self._build = session_id, items, cls, build
        self._first = first or {}  # more fields of the first message
        self._error = None

    def __iter__(self):
        try:
            first = True
            for item in self._items:
                if first:
                    req = self._cls(session_id=self._session_id, **self._build(item),
                                    **self._first)
                else:
                    req = self._cls(**self._build(item))
                first = False
                yield req
            if first:
                yield self._cls(session_id=self._session_id, **self._first)
        except Exception as e:  # noqa: BLE001 - re-raised by check()
            self._error = e

    def check(self, rpc_error=None):
        """Raises the error kept from building requests, else `rpc_error` as a QtrainError."""
        if self._error is not None:
            raise self._error from None
        if rpc_error is not None:
            raise QtrainError(rpc_error.code(), rpc_error.details()) from None

    def run(self, call):
        """`call(request_iterator)`, with errors as `check` raises them."""
        try:
            result = call(iter(self))
        except grpc.RpcError as e:
            self.check(e)
        self.check()
        return result


def _batcher(scale, offset):
    """Request fields of an (inputs, targets) pair; the inputs carry `scale` and `offset`."""
    def fields(pair):
        x, y = pair
        return {"batch": pb.Batch(inputs=to_tensor(x, scale, offset), targets=to_tensor(y))}
    return fields


def _architecture(model, weights, input_shape):
    """The Architecture message `model` names, or None when it is a spec."""
    if model is None and weights is not None and hasattr(weights, "state_dict"):
        model = torchvision_architecture(weights, input_shape)
    elif model is not None and hasattr(model, "state_dict"):
        model = torchvision_architecture(model, input_shape)
    if isinstance(model, model_pb2.Architecture):
        return model
    if isinstance(model, str) and ":" in model and not model.lstrip().startswith("{"):
        model = {"name": model}
    if isinstance(model, dict) and "name" in model and "body" not in model:
        a = model_pb2.Architecture(name=model["name"],
                                   options={k: float(v) for k, v in
                                            model.get("options", {}).items()})
        shape = model.get("input_shape", input_shape)
        if shape is not None:
            a.input_shape.extend(int(d) for d in shape)
        return a
    return None


class Client:
    """A connection to qtrain-server at `address` (default: $QTRAIN_SERVER, else
    127.0.0.1:50051). Usable as a context manager; thread-safe like the gRPC channel."""

    def __init__(self, address=None, channel=None, tls_ca=None, tls_cert=None, tls_key=None,
                 token=None):
        """TLS when `tls_ca` (a PEM file; "system" for the system's roots) or $QTRAIN_TLS_CA is
        set; `tls_cert` / `tls_key` (or $QTRAIN_TLS_CERT / $QTRAIN_TLS_KEY) for mutual TLS;
        `token` (or $QTRAIN_TOKEN) a bearer token for a server with --auth_tokens (TLS only)."""
        self.address = address or os.environ.get("QTRAIN_SERVER") or DEFAULT_SERVER
        options = [("grpc.max_receive_message_length", 256 << 20),
                   ("grpc.max_send_message_length", 256 << 20)]
        tls_ca = tls_ca or os.environ.get("QTRAIN_TLS_CA")
        tls_cert = tls_cert or os.environ.get("QTRAIN_TLS_CERT")
        tls_key = tls_key or os.environ.get("QTRAIN_TLS_KEY")
        token = token or os.environ.get("QTRAIN_TOKEN")
        if channel is None and tls_ca:
            if bool(tls_cert) != bool(tls_key):
                raise ValueError("tls_cert and tls_key go together")

            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(
                root_certificates=None if tls_ca == "system" else read(tls_ca),
                private_key=read(tls_key) if tls_key else None,
                certificate_chain=read(tls_cert) if tls_cert else None)
            if token:  # "authorization: Bearer <token>" with every call
                creds = grpc.composite_channel_credentials(
                    creds, grpc.access_token_call_credentials(token))
            channel = grpc.secure_channel(self.address, creds, options=options)
        elif channel is None and (tls_cert or tls_key or token):
            raise ValueError('tls_cert / tls_key / token need tls_ca (or "system"): credentials '
                             'never travel in plaintext')
        self._channel = channel or grpc.insecure_channel(self.address, options=options)
        self._stub = trainer_service_pb2_grpc.TrainerStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- health and sessions --------------------------------------------------------------

    @_wrap
    def health(self, service="", timeout=5.0):
        """'SERVING', 'NOT_SERVING', ...; waits up to `timeout` seconds for the server."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                       wait_for_ready=True)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    @_wrap
    def server_info(self):
        """The server's CPU, its ISA level (`active_isa`; QTRAIN_MAX_ISA on the server caps it)
        and the int8 kernel chosen per op (`int8_kernels`, with every candidate considered)."""
        return self._stub.GetServerInfo(pb.GetServerInfoRequest())

    @_wrap
    def create_session(self, session_id="", model=None, rules=None, optimizer=None, seed=1,
                       input_shape=None, world_size=1, backend=""):
        """A new session ("" lets the server pick the id). `model`, `rules` and `optimizer` are
        messages, dicts in their JSON form, JSON strings or preset names ("mlp", "qat-int8",
        "adamw"); `model` may also be a named architecture ("torchvision:resnet18", a dict with
        "name", or a torchvision model object: see import_weights); `seed` (default 1, as the
        CLI's) fixes the initial weights; `world_size` > 1 trains it data-parallel over the
        server and its peers (docs/scaling.md); `backend` names the backend its ops run on
        (get_server_info().backends; "": the server's default)."""
        architecture = _architecture(model, None, input_shape)
        return self._stub.CreateSession(pb.CreateSessionRequest(
            session_id=session_id, architecture=architecture,
            model=None if architecture is not None else _message(model, model_pb2.ModelSpec),
            rules=_message(rules, rules_pb2.RuleSet),
            optimizer=_message(optimizer, optimizer_pb2.OptimizerConfig), seed=seed,
            data_parallel=pb.DataParallel(world_size=world_size) if world_size != 1 else None,
            backend=backend),
            metadata=_route(session_id))

    @_wrap
    def get_session(self, session_id):
        return self._stub.GetSession(pb.GetSessionRequest(session_id=session_id),
                                     metadata=_route(session_id))

    @_wrap
    def list_sessions(self):
        return list(self._stub.ListSessions(pb.ListSessionsRequest()).sessions)

    @_wrap
    def delete_session(self, session_id):
        self._stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id),
                                 metadata=_route(session_id))

    @_wrap
    def update_rules(self, session_id, rules):
        """Switches the rules between steps (float -> QAT -> QT share the float weights)."""
        return self._stub.UpdateRules(pb.UpdateRulesRequest(
            session_id=session_id, rules=_message(rules, rules_pb2.RuleSet)),
            metadata=_route(session_id))

    # -- streams --------------------------------------------------------------------------

    def train(self, session_id, batches, input_scale=None, input_offset=None):
        """Streams (inputs, targets) array pairs and yields one TrainResponse per step, in order
        (step, loss, accuracy, grad_norm, learning_rate, examples, last_durable_step). Batches
        are pipelined: the server's flow control paces the iterator. `input_scale` /
        `input_offset` (every stream and forward take them): the server uses inputs * scale +
        offset, e.g. uint8 images with input_scale=1/255 (a quarter of float32's bytes)."""
        reqs = _Requests(session_id, batches, pb.TrainRequest,
                         _batcher(input_scale, input_offset))
        try:
            yield from self._stub.Train(iter(reqs), metadata=_route(session_id))
        except grpc.RpcError as e:
            reqs.check(e)
        reqs.check()

    def evaluate(self, session_id, batches, update_stats=False, input_scale=None,
                 input_offset=None):
        """Loss and accuracy over (inputs, targets) pairs: an EvaluateResponse."""
        batch = _batcher(input_scale, input_offset)
        reqs = _Requests(session_id, batches, pb.EvaluateRequest,
                         lambda pair: {**batch(pair), "update_stats": update_stats})
        return reqs.run(lambda it: self._stub.Evaluate(it, metadata=_route(session_id)))

    def calibrate(self, session_id, inputs, on_progress=None, input_scale=None, input_offset=None):
        """Forward-only calibration over input arrays; returns the final QuantStats.
        `on_progress(batches, examples)` is called as the server reports each batch."""
        def consume(requests):
            stats = None
            for r in self._stub.Calibrate(requests, metadata=_route(session_id)):
                if r.HasField("stats"):
                    stats = r.stats
                elif on_progress:
                    on_progress(r.batches, r.examples)
            return stats
        reqs = _Requests(session_id, inputs, pb.CalibrateRequest,
                         lambda x: {"inputs": to_tensor(x, input_scale, input_offset)})
        return reqs.run(consume)

    def analyze_sensitivity(self, session_id, batches, rules=None, qtypes=(),
                            max_accuracy_drop=0.0, max_loss_increase=0.0,
                            all_but_one=True, on_progress=None, input_scale=None,
                            input_offset=None):
        """Which quantized ops cost accuracy, over held-out (inputs, targets) pairs: the float
        model, the model under `rules` (None: the session's), each op quantized alone and (with
        `all_but_one`) each left float. With a budget — `max_accuracy_drop` (absolute) or
        `max_loss_increase` (relative to the float loss) — also the cheapest mixed precision
        over `qtypes` (most compressed first; float last) within it, whose `rules` UpdateRules
        takes as they are. Returns the SensitivityReport message; `on_progress(response)` sees
        every message before it. The session does not change."""
        options = pb.SensitivityOptions(
            qtypes=list(qtypes), max_accuracy_drop=max_accuracy_drop,
            max_loss_increase=max_loss_increase, skip_all_but_one=not all_but_one)
        if rules is not None:
            options.rules.CopyFrom(_message(rules, rules_pb2.RuleSet))

        def consume(requests):
            report = None
            for r in self._stub.AnalyzeSensitivity(requests, metadata=_route(session_id)):
                if r.HasField("report"):
                    report = r.report
                elif on_progress:
                    on_progress(r)
            return report
        reqs = _Requests(session_id, batches, pb.SensitivityRequest,
                         _batcher(input_scale, input_offset), first={"options": options})
        return reqs.run(consume)

    # -- one-shot calls -------------------------------------------------------------------

    @_wrap
    def forward(self, session_id, inputs, input_scale=None, input_offset=None):
        """The model's outputs (logits) for an input array, as an array."""
        r = self._stub.Forward(pb.ForwardRequest(
            session_id=session_id, inputs=to_tensor(inputs, input_scale, input_offset)),
            metadata=_route(session_id))
        return from_tensor(r.outputs)

    @_wrap
    def quant_stats(self, session_id):
        """The session's QuantStats message (see stats_rows for plain rows)."""
        return self._stub.GetQuantStats(pb.GetQuantStatsRequest(session_id=session_id),
                                        metadata=_route(session_id))

    @staticmethod
    def stats_rows(stats):
        """QuantStats as a list of dicts with numpy arrays (absent tensors are None)."""
        rows = []
        for s in stats.stats:
            row = {"module_path": s.module_path, "name": s.name, "count": s.count,
                   "qtype": s.qtype, "scale_error": s.scale_error}
            for field in ("sum_of_absmax", "sum_of_min", "sum_of_max", "scale", "zero_point"):
                row[field] = from_tensor(getattr(s, field)) if s.HasField(field) else None
            rows.append(row)
        return rows

    # -- checkpoints ----------------------------------------------------------------------

    @_wrap
    def save_checkpoint(self, session_id):
        """A durable checkpoint in the server's data dir: CheckpointInfo (step, bytes, crc32)."""
        return self._stub.SaveCheckpoint(pb.SaveCheckpointRequest(session_id=session_id),
                                         metadata=_route(session_id))

    @_wrap
    def download_checkpoint(self, session_id, path=None):
        """The session's checkpoint as safetensors bytes; also written to `path` when given
        (through a temporary file, so a failure leaves no partial file)."""
        data = b"".join(c.data for c in self._stub.DownloadCheckpoint(
            pb.DownloadCheckpointRequest(session_id=session_id), metadata=_route(session_id)))
        if path is not None:
            tmp = f"{path}.part"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except OSError:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        return data

    def checkpoint_arrays(self, session_id):
        """({tensor name: ndarray}, metadata) of the session's checkpoint."""
        return load_safetensors(self.download_checkpoint(session_id))

    @_wrap
    def import_weights(self, session_id, model, weights, module_map=None, rules=None,
                       optimizer=None, seed=1, input_shape=None):
        """A new session from `model` and float weights trained elsewhere; returns the Session.
        `model` is a spec (as create_session takes it), a named architecture ("torchvision:
        resnet18", or {"name", "options", "input_shape"}: its module names are the library's, so
        no module_map is needed), or None when `weights` is a torchvision model object (its
        architecture is recognised; `input_shape` (H, W, C) sets the image size). `weights` is
        a torch.nn.Module (its state_dict, and module_map from torch_module_map when not given),
        a dict of arrays (PyTorch naming and layouts: Linear weight (out, in), conv OIHW),
        safetensors bytes, or a file path. `module_map`: {qtrain module: module name in the
        weights}; unlisted modules are looked up by their path with '.' for '/'. The server
        names every tensor that does not fit."""
        architecture = _architecture(model, weights, input_shape)
        spec = None if architecture is not None else _message(model, model_pb2.ModelSpec)
        if hasattr(weights, "state_dict"):
            if module_map is None and spec is not None:
                module_map = torch_module_map(weights, spec)
            weights = {k: v.detach().cpu().numpy() for k, v in weights.state_dict().items()}
        if isinstance(weights, dict):
            data = save_safetensors({k: np.asarray(v, dtype=np.float32) for k, v in
                                     weights.items()})
        elif isinstance(weights, (bytes, bytearray, memoryview)):
            data = bytes(weights)
        else:
            with open(weights, "rb") as f:
                data = f.read()
        first = pb.ImportRequest(
            session_id=session_id, model=spec, architecture=architecture,
            rules=_message(rules, rules_pb2.RuleSet),
            optimizer=_message(optimizer, optimizer_pb2.OptimizerConfig), seed=seed,
            module_map=module_map or {}, data=data[:_CHUNK])

        def chunks():
            yield first
            for at in range(_CHUNK, len(data), _CHUNK):
                yield pb.ImportRequest(data=data[at:at + _CHUNK])
        return self._stub.ImportWeights(chunks(), metadata=_route(session_id))

    def import_hf(self, session_id, source, seq_len=None, rules=None, optimizer=None, seed=1,
                  pad_id=None):
        """A session from a Hugging Face model: a directory with config.json and
        model.safetensors (or its shards), or a `transformers` model object. Families:
        LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM, GPT2LMHeadModel, BertModel and
        BertForSequenceClassification. The server builds the model from the config (a field it
        does not implement is refused by name); module paths are HF's parameter names.
        `seq_len`: the session's sequence length (default min(max_position_embeddings, 512)).
        `pad_id`: the token id that pads sequences (not attended to, not counted by the loss;
        BERT's default is its pad_token_id). Returns the Session."""
        if isinstance(source, (str, os.PathLike)):
            config, weights = read_hf_config(source), read_hf_weights(source)
        else:  # a transformers PreTrainedModel
            config = source.config.to_json_string()
            weights = {k: v.detach().float().cpu().numpy() for k, v in source.state_dict().items()}
        arch = model_pb2.Architecture(name="hf", hf_config=config)
        if seq_len is not None:
            arch.input_shape.append(int(seq_len))
        if pad_id is not None:
            arch.options["pad_id"] = float(pad_id)
        return self.import_weights(session_id, arch, weights, rules=rules, optimizer=optimizer,
                                   seed=seed)

    @_wrap
    def export_quantized(self, session_id, out_dir=None, module_map=None,
                         format="compressed-tensors"):
        """The session quantized for deployment as compressed-tensors (int-quantized int8, or
        pack-quantized int4 / grouped weights; static or dynamic input scales): returns
        ({tensor name: ndarray}, quantization_config dict). With `out_dir`, also writes
        model.safetensors and config.json there, as vLLM and Hugging Face read them (for a
        session imported from a Hugging Face directory, its config.json with the
        quantization_config added). `module_map` names the layers as in the original model."""
        data = b"".join(c.data for c in self._stub.ExportQuantized(pb.ExportRequest(
            session_id=session_id, format=format, module_map=module_map or {}),
            metadata=_route(session_id)))
        arrays, metadata = load_safetensors(data)
        config = json.loads(metadata.get("quantization_config", "{}"))
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
                f.write(data)
            with open(os.path.join(out_dir, "config.json"), "w") as f:
                if "config.json" in metadata:
                    f.write(metadata["config.json"] + "\n")
                else:
                    json.dump({"quantization_config": config}, f, indent=2)
        return arrays, config

    @_wrap
    def export_onnx(self, session_id, path=None):
        """The session as an ONNX model with QuantizeLinear / DequantizeLinear around every
        quantized op (opset 17; input "input", output "logits"): returns its bytes, and writes
        them to `path` when given."""
        data = b"".join(c.data for c in self._stub.ExportQuantized(pb.ExportRequest(
            session_id=session_id, format="onnx"), metadata=_route(session_id)))
        if path is not None:
            with open(path, "wb") as f:
                f.write(data)
        return data

    @_wrap
    def upload_checkpoint(self, session_id, checkpoint):
        """Sends a checkpoint (bytes or a file path) into session `session_id`, created from it
        when new; returns CheckpointInfo."""
        if not isinstance(checkpoint, (bytes, bytearray, memoryview)):
            with open(checkpoint, "rb") as f:
                checkpoint = f.read()
        data = bytes(checkpoint)

        def chunks():
            yield pb.CheckpointChunk(session_id=session_id, data=data[:_CHUNK])
            for at in range(_CHUNK, len(data), _CHUNK):
                yield pb.CheckpointChunk(data=data[at:at + _CHUNK])
        return self._stub.UploadCheckpoint(chunks(), metadata=_route(session_id))
