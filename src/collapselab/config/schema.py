"""The experiment's fields, each documented once beside it (the CLI help and the docs are built
from here): ``ExperimentConfig`` and the component sections it holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pydantic_core
import yaml
from pydantic import BaseModel, ConfigDict, Field

from collapselab.watermark import Watermark


class Spec(BaseModel):
    """A component: its registered name plus its parameters (pydantic extras)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelSpec(Spec):
    family: str = Field("gaussian", description="registered model family (collapselab list)")


class DataSpec(Spec):
    source: str = Field("normal", description="registered data source")
    size: int = Field(100, ge=1, description="real training samples (blocks for text) per generation")


class PolicySpec(Spec):
    name: str = Field("replace", description="registered data policy")


class ProducerSpec(BaseModel):
    """One model of a multi-producer loop: what it is and whose output it trains on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="label in metrics")
    model: ModelSpec = Field(description="its family and parameters, like the top-level model")
    trains_on: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = Field(None, description=(
        "shares of producers' (curated) output in the synthetic part of its next training set, "
        "summing to 1, e.g. {small: 0.5, large: 0.5}; {other: 1}: trains only on another's "
        "output; null: its own output only"))


class NamedSpec(Spec):
    name: str = Field(description="registered component name")


EveryK = Annotated[int, Field(ge=1, strict=True)]  # keep_samples: every k-th generation


class TrackingSpec(BaseModel):
    """Where the run is logged besides its directory (which stays the record): an experiment
    tracker. See ``collapselab.tracking``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["mlflow", "wandb"] = Field(description=(
        "experiment tracker: mlflow, or wandb (Weights & Biases)"))
    uri: str | None = Field(None, description=(
        "mlflow: tracking URI (sqlite:///mlflow.db, http://host:5000, file:./mlruns); null: "
        "MLFLOW_TRACKING_URI, else ./mlruns. wandb: the server's URL (https://api.wandb.ai or "
        "your own); null: WANDB_BASE_URL, else W&B's cloud"))
    experiment: str = Field("collapselab", min_length=1, description=(
        "mlflow: experiment name; wandb: the project where `project` is not set"))
    artifacts: bool = Field(True, description=(
        "also upload the report and the run directory (config, metrics, records, samples)"))
    project: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^/\\#?%:]+$",
                                description="wandb: project (null: `experiment`)")
    entity: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^/\\#?%:]+$",
                               description="wandb: entity (team or user; null: your default)")
    mode: Literal["offline", "online"] | None = Field(None, description=(
        "wandb: offline writes the run under `dir` only (`wandb sync` uploads it later); online "
        "logs to the server (needs an API key: wandb login or WANDB_API_KEY); null: online "
        "where `uri` names a server, else offline"))
    dir: str | None = Field(None, min_length=1, description=(
        "wandb: the folder wandb writes its run files under (<dir>/wandb/); null: WANDB_DIR, "
        "else the working directory"))

    @pydantic.field_validator("project", "entity", "mode", "dir")
    @classmethod
    def _wandb_only(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        backend = info.data.get("backend")
        if value is not None and backend != "wandb":
            raise pydantic_core.PydanticCustomError(
                "wandb_only", "a wandb field; tracking.backend is {backend}", {"backend": repr(backend)})
        return value


class ExperimentConfig(BaseModel):
    """One collapse experiment. Each field is documented here once; the CLI help is built from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200, description=(
        "run name: the run directory is <out_dir>/<name> (at most 200 characters: a file "
        "name holds 255 bytes)"))] = "experiment"
    generations: Annotated[int, Field(ge=1, le=1_000_000, description=(
        "model fits: generation 0 trains on real data, each later one on composed data"))] = 10
    seed: Annotated[int, Field(ge=0, description="root seed of every random stream")] = 0
    chains: Annotated[int, Field(ge=1, description=(
        "independent replicates run side by side (vectorised where the family allows)"))] = 1
    synthetic_size: Annotated[int | None, Field(ge=1, description=(
        "samples generated per generation; default: data.size"))] = None
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    policy: PolicySpec = PolicySpec()
    curation: Annotated[list[NamedSpec], Field(description=(
        "filters applied to synthetic data, in order"))] = []
    metrics: Annotated[list[NamedSpec] | None, Field(description=(
        "metrics per generation; default: every built-in metric that applies to the data"))] = None
    producers: Annotated[list[ProducerSpec] | None, Field(description=(
        "several models each generation (replaces model:): each trains on a mix of the "
        "producers' outputs (trains_on) under the policy; null: the one model"))] = None
    watermark: Annotated[Watermark | None, Field(description=(
        "green-list watermark on the LM families' sampling (gamma, delta, key, generations, "
        "z_threshold); null: none"))] = None
    on_degenerate: Annotated[Literal["stop", "continue"], Field(description=(
        "a generation that fails to train or yields non-finite samples: stop the run, or "
        "record it and retrain from the previous training set"))] = "stop"
    keep_samples: Annotated[Literal["last", "all", "none"] | EveryK, Field(
        description=(
            "samples kept on disk once the run ends: last (generation 0 and the newest), all, "
            "none, or an integer k (every k-th generation and the newest); while it runs, what "
            "a resume needs is kept too"))] = "last"
    out_dir: Annotated[str, Field(description="folder that holds run directories")] = "runs"
    tracking: Annotated[TrackingSpec | None, Field(description=(
        "log the run to an experiment tracker ({backend: mlflow, uri: ..., experiment: ...}): "
        "config as params, metrics by generation, report and run directory as artifacts; "
        "null: none"))] = None

    @pydantic.field_validator("curation", "metrics", mode="before")
    @classmethod
    def _names_as_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @pydantic.field_validator("out_dir")
    @classmethod
    def _expand_home(cls, value: str) -> str:
        return os.path.expanduser(value)  # out_dir=~/runs: the home folder, not a folder named ~

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_yaml(self) -> str:
        return yaml.dump(self.model_dump(mode="json"), sort_keys=False,
                         Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))  # libyaml: 4x
