"""``edge-sdk craft DIR --out FILE``: crafted features of a folder of images, ready to release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from edge_sdk.cli._common import (
    AlignOption,
    AllFacesOption,
    ApiKeyOption,
    DeviceOption,
    EncoderOnnxOption,
    FolderArgument,
    KitOption,
    LatentNoiseOption,
    OutOption,
    PresetOption,
    ThreadsOption,
    crafter_config,
    handle_errors,
    report_job,
    require_api_key,
    use_threads,
)
from edge_sdk.client import CloudClient
from edge_sdk.crafting.cache import RepeatCache
from edge_sdk.crafting.crafter import Crafter
from edge_sdk.data.folder import FolderImages, list_images, read_labels_csv
from edge_sdk.data.images import FacePolicy
from edge_sdk.distributed import craft_folder_on_ray
from edge_sdk.errors import LabelFileError
from edge_sdk.jobs import crafting_settings, parts_folder, run_folder_job
from edge_sdk.kit import load_kit
from edge_sdk.runtime import load_encoder

__all__ = ["craft"]


def _check_upload_options(*, upload: str | None, api_key: str | None, dataset: str | None, labels: Path | None) -> None:
    if upload is None and (dataset is not None or labels is not None):
        raise typer.BadParameter("--dataset and --labels need --upload URL", param_hint="--upload")
    require_api_key(upload=upload, api_key=api_key)
    if (dataset is None) != (labels is None):
        raise typer.BadParameter("--dataset and --labels go together", param_hint="--dataset")


@handle_errors
def craft(
    folder: FolderArgument,
    out: OutOption,
    kit: KitOption = None,
    encoder_onnx: EncoderOnnxOption = None,
    preset: PresetOption = "default",
    beta: Annotated[float | None, typer.Option(help="Utility weight; larger keeps features closer to raw.")] = None,
    steps: Annotated[int | None, typer.Option(min=0, help="Feature updates per batch.")] = None,
    solver: Annotated[str | None, typer.Option(help="Inverse-Hessian solver: cg, neumann or dense.")] = None,
    latent_noise: LatentNoiseOption = None,
    seed: Annotated[int, typer.Option(help="Seed; same images and seed give the same features.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images crafted together.")] = 32,
    cache: Annotated[
        Path | None, typer.Option(help="SQLite repeat cache: an image seen before gets its first release again.")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Discard unfinished work of an interrupted run.")] = False,
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    align: AlignOption = True,
    all_faces: AllFacesOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    upload: Annotated[
        str | None,
        typer.Option(
            help="Cloud stub URL: send each crafted batch for prediction (answers go to FILE's .json), "
            "or with --dataset store it for head training."
        ),
    ] = None,
    api_key: ApiKeyOption = None,
    dataset: Annotated[
        str | None, typer.Option(help="With --upload: collect the crafted features under this dataset name.")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="With --dataset: CSV with columns file,label (file relative to FOLDER).")
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Craft on a Ray cluster (extra 'ray'): FILE becomes a folder of shards with a manifest; "
            "same features as without --ray at --threads equal to --threads-per-actor.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(help="With --ray: the cluster's address (default: RAY_ADDRESS, else a local instance)."),
    ] = None,
    actors: Annotated[int, typer.Option(min=1, help="With --ray: crafting actors, each loading the kit once.")] = 2,
    threads_per_actor: Annotated[int, typer.Option(min=1, help="With --ray: torch threads of each actor.")] = 1,
) -> None:
    """Craft every image of FOLDER so that a white-box inversion attacker sees an average face.

    Batches are written as they finish; if the run stops, the same command resumes
    without crafting finished batches again, and FILE appears only when complete.
    Diagnostics (utility loss, distortion, epsilon-PII per batch, skipped files) go
    to FILE with suffix .json.
    """
    use_threads(threads)
    config = crafter_config(preset, seed=seed, beta=beta, steps=steps, solver=solver, latent_noise=latent_noise)
    policy = FacePolicy(align=align, all_faces=all_faces)
    if ray:
        if upload is not None or cache is not None or device != "cpu":
            raise typer.BadParameter(
                "--ray writes shards only (upload them afterwards), finds repeats across the whole folder "
                "without a --cache, and crafts on CPU actors",
                param_hint="--ray",
            )
        result = craft_folder_on_ray(
            folder,
            out,
            config=config,
            kit=kit,
            encoder_onnx=encoder_onnx,
            batch_size=batch_size,
            policy=policy,
            actors=actors,
            threads_per_actor=threads_per_actor,
            address=ray_address,
            restart=restart,
            progress=not quiet,
        )
        report_job(result, verb="crafted", feature_shape=load_kit(kit).feature_shape)
        return
    _check_upload_options(upload=upload, api_key=api_key, dataset=dataset, labels=labels)
    label_of: dict[str, int] = {}
    if labels is not None:
        label_of = read_labels_csv(labels)
        unlabelled = [f for f in list_images(folder) if f not in label_of]
        if unlabelled:
            raise LabelFileError(f"{labels}: no label for {len(unlabelled)} image(s), e.g. {unlabelled[0]}")
    loaded = load_kit(kit)
    runtime = load_encoder(loaded, encoder_onnx)
    crafter = Crafter(loaded, config, encoder=runtime, device=device)
    if cache is not None:
        crafter.cache = RepeatCache(cache, scope=crafter.scope)
    run_cache = cache is None  # this run's own, opened beside its batches once the job has started

    client = CloudClient(upload, api_key=api_key or "") if upload is not None else None

    def transform(batch: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
        nonlocal run_cache
        if run_cache:
            # Kept with the finished batches: a resumed run still releases a face met
            # before the interruption once (attack A3), and forgets nothing within the run.
            path = parts_folder(out) / "repeat-cache.sqlite"
            crafter.cache = RepeatCache(path, scope=crafter.scope, max_entries=2**62, memory_entries=1024)
            run_cache = False
        result = crafter.craft(images=batch.images)
        features, diagnostics = result.features.numpy(), result.diagnostics
        # Uploading inside the batch step: a batch counts as done only once the cloud
        # has it, and a resumed run re-sends the same bytes, which the server stores once.
        if client is not None and dataset is not None:
            stored = client.upload_samples(dataset, features, np.array([label_of[f] for f in batch.files]))
            diagnostics["cloud"] = {"dataset": dataset, "batch_id": stored["batch_id"], "total": stored["total"]}
        elif client is not None:
            prediction = client.predict(features)
            diagnostics["cloud"] = {
                "head_id": prediction.head_id,
                "files": batch.files,
                "labels": prediction.labels.tolist(),
            }
        return features, diagnostics

    job_config = crafting_settings(
        loaded,
        config,
        encoder_onnx=encoder_onnx,
        threads=torch.get_num_threads(),
        upload=upload,
        dataset=dataset,
        device=device,
    )
    result = run_folder_job(
        folder,
        out,
        spec=loaded.spec,
        policy=policy,
        transform=transform,
        batch_size=batch_size,
        config=job_config,
        restart=restart,
        progress=not quiet,
        desc="craft",
    )
    report_job(result, verb="crafted", feature_shape=loaded.feature_shape)
    if client is not None:
        client.close()
        where = f"dataset {dataset!r} at {upload}" if dataset else f"{upload} for prediction (answers in the .json)"
        typer.echo(f"uploaded crafted features to {where}")
