"""OpenVLA: fused ViTs -> MLP projector -> Llama, predicting actions as 7 greedy tokens.

Reads top to bottom: construction, loading/saving, image embedding, the training forward,
and the prediction path (prefill once with image + prompt, then one token per step off a KV cache).
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import transformers
from torch import nn

from vla.errors import CheckpointError, ImageError, InstructionError, LoraError, StatisticsError
from vla.model import checkpoint as ckpt
from vla.model.action_tokenizer import ActionTokenizer
from vla.model.config import RTH_CONFIG_KEY, OpenVLAConfig
from vla.model.llm import CACHE_ARG, build_llm, rebuild_rotary
from vla.model.multi_image import RoleTokens, has_role_tokens, split_roles, stack_role_images
from vla.model.normalization import select_stats, unnormalize_actions
from vla.model.presets import get_preset
from vla.model.processor import IGNORE_INDEX, ImageTransform, OpenVLAProcessor, PromptTokenizer
from vla.model.projector import build_projector
from vla.model.vib import add_kl_term
from vla.model.vision import FusedVisionBackbone, from_checkpoint_names, to_checkpoint_names

log = logging.getLogger(__name__)

TOKENIZER_ASSETS = "assets/llama2-tokenizer"  # Llama-2 tokenizer + <PAD>, shipped for presets
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class VLAOutput(transformers.modeling_outputs.CausalLMOutputWithPast):
    """The Llama output, with `loss` = action loss + vib_beta * KL when the model has a bottleneck."""

    action_loss: torch.FloatTensor | None = None  # the cross-entropy alone
    kl: torch.FloatTensor | None = None  # the bottleneck's KL (0 without VIB roles)


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """What one greedy decode produced for a batch."""

    token_ids: np.ndarray  # int64 [B, n_tokens]
    first_logits: torch.Tensor  # float32 [B, vocab]: logits at the last prompt position


class OpenVLA(nn.Module):
    """The OpenVLA policy; `from_pretrained` / `from_preset` build it, `predict_action` runs it."""

    def __init__(self, config: OpenVLAConfig, tokenizer: PromptTokenizer,
                 norm_stats: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = FusedVisionBackbone(config)
        self.projector = build_projector(config.arch_specifier, self.vision_backbone.embed_dim,
                                         config.text_config.hidden_size)
        self.language_model = build_llm(config.text_config)
        # several cameras or a bottleneck (vla.model.multi_image); None keeps a published checkpoint's modules
        self.role_tokens = (RoleTokens(config.image_roles, config.vib_roles, config.text_config.hidden_size)
                            if has_role_tokens(config.image_roles, config.vib_roles) else None)
        self.norm_stats: dict[str, Any] = dict(norm_stats or {})
        self.action_tokenizer = ActionTokenizer(config.tokenizer_vocab_size, config.n_action_bins)
        self.processor = OpenVLAProcessor(
            tokenizer,
            ImageTransform(config.image_size, self.vision_backbone.normalizations, config.eval_center_crop_area),
            self.action_tokenizer)
        self.quantization: str | None = None  # set by vla.model.quantization.quantize

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, norm_stats: Mapping[str, Any] | None = None, seed: int = 0,
                    dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> "OpenVLA":
        """Random init of a named preset (`tiny`, `openvla-7b`); device="meta" builds shapes only."""
        config = get_preset(name)
        dtype = dtype or DTYPES[config.torch_dtype]
        device = torch.device(device or "cpu")
        previous = torch.get_default_dtype()
        try:  # build in the target dtype: a 7B model built in float32 first would need twice the memory
            torch.set_default_dtype(dtype)
            with torch.random.fork_rng(devices=[]), torch.device(device):
                torch.manual_seed(seed)
                model = cls(config, preset_tokenizer(), norm_stats)
        finally:
            torch.set_default_dtype(previous)
        model.to(dtype)
        if device.type != "meta":  # .to(dtype) also cast the RoPE frequencies; recompute them in float32
            rebuild_rotary(model.language_model, device)
        return model.eval()

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, dtype: torch.dtype | None = None,
                        quantization: str | None = None) -> "OpenVLA":
        """Load an OpenVLA checkpoint folder (e.g. openvla/openvla-7b as published), in eval mode."""
        path = pathlib.Path(path)
        if ckpt.is_adapter_folder(path):
            return cls._from_adapter(path, dtype, quantization)
        ckpt.check_folder(path)
        config, norm_stats = ckpt.read_config(path)
        tokenizer = PromptTokenizer.from_folder(path)
        with torch.device("meta"):  # no random init of weights that are about to be replaced
            model = cls(config, tokenizer, norm_stats)
        log.info("loading %s (%s)", path, ", ".join(f.name for f in ckpt.weight_files(path)))
        ckpt.load_weights(model, ckpt.read_tensors(path, from_checkpoint_names, dtype), path)
        rebuild_rotary(model.language_model, "cpu")
        if quantization is not None:
            from vla.model.quantization import quantize
            quantize(model, quantization)
        return model.eval()

    @classmethod
    def _from_adapter(cls, path: pathlib.Path, dtype: torch.dtype | None, quantization: str | None) -> "OpenVLA":
        """A LoRA adapter folder: its base loaded, the adapters injected with their trained weights."""
        from vla.model.lora import add_lora
        cfg, base, tensors, stats = ckpt.read_adapter(path)
        model = cls.from_pretrained(base, dtype=dtype, quantization=quantization)
        add_lora(model, rank=int(cfg["r"]), target_modules=list(cfg["target_modules"]),
                 alpha=cfg.get("lora_alpha"), dropout=float(cfg.get("lora_dropout", 0.0)))
        want = {k for k in model.state_dict() if ".lora_" in k}
        missing, extra = want - tensors.keys(), tensors.keys() - want
        if missing or extra:
            raise CheckpointError(f"adapter weights in {path} do not fit its adapter_config.json: {len(missing)} "
                                  f"missing (e.g. {sorted(missing)[:2]}), {len(extra)} unexpected "
                                  f"(e.g. {sorted(extra)[:2]})")
        model.load_state_dict(tensors, strict=False)  # strict for the adapter keys, checked just above
        model.norm_stats = {**model.norm_stats, **stats}
        return model.eval()

    def save_pretrained(self, path: str | pathlib.Path) -> None:
        """Write an OpenVLA-format folder that `from_pretrained` (and the original code) reads."""
        if self.quantization is not None:
            raise CheckpointError(f"this model is quantized ({self.quantization}); save the full-precision model "
                                  "and quantize when loading (from_pretrained(..., quantization=...))")
        if has_lora(self):
            raise LoraError("this model carries LoRA adapters; call vla.merge_lora(model) before save_pretrained")
        path = pathlib.Path(path)
        tensors = {to_checkpoint_names(k): v for k, v in self.state_dict().items()}
        dtype_name = {v: k for k, v in DTYPES.items()}[next(self.language_model.parameters()).dtype]
        config = dataclasses.replace(self.config, torch_dtype=dtype_name)
        tok = self.processor.tokenizer
        extra = {
            "generation_config.json": {"_from_model_config": True, "bos_token_id": tok.bos_id,
                                       "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id},
            "preprocessor_config.json": self.processor.preprocessor_config(),
            "processor_config.json": {"auto_map": {"AutoProcessor": "processing_prismatic.PrismaticProcessor"},
                                      "processor_class": "PrismaticProcessor"},
        }
        ckpt.write_checkpoint(path, config, self.norm_stats, tensors, extra)
        tok.save(path)

    # ---- shared by training and prediction ----------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.language_model.lm_head.weight.device

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 6 * roles, H, W] -> projected patch embeddings [B, roles * num_patches, llm_hidden]."""
        return self.embed_images_with_kl(pixel_values)[0]

    def embed_images_with_kl(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch embeddings and the bottleneck's KL (0 without VIB roles); z is sampled while training."""
        roles = self.config.image_roles
        flat = split_roles(pixel_values, len(roles), 3 * len(self.vision_backbone.vits))
        dtype = self.vision_backbone.featurizer.patch_embed.proj.weight.dtype  # a conv: never quantized
        patches = self.projector(self.vision_backbone(flat.to(self.device, dtype)))
        if self.role_tokens is None:
            return patches, patches.new_zeros((), dtype=torch.float32)
        patches = patches.reshape(pixel_values.shape[0], len(roles), *patches.shape[1:])
        return self.role_tokens(patches, sample=self.training or self.config.vib_sample_at_eval)

    def merge_image_tokens(self, input_ids: torch.Tensor, patches: torch.Tensor,
                           attention_mask: torch.Tensor | None, labels: torch.Tensor | None = None,
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[BOS, patches, rest of ids] embeddings, with mask (patches attended) and labels (patches ignored)."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        merged = torch.cat([embeds[:, :1], patches.to(embeds.dtype), embeds[:, 1:]], dim=1)
        b, p = patches.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = torch.cat([attention_mask[:, :1], attention_mask.new_ones(b, p), attention_mask[:, 1:]], dim=1)
        if labels is not None:
            labels = torch.cat([labels[:, :1], labels.new_full((b, p), IGNORE_INDEX), labels[:, 1:]], dim=1)
        return merged, mask, labels

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                ) -> transformers.modeling_outputs.CausalLMOutputWithPast:
        """Training forward on right-padded ids (from `processor.encode_training`); `.loss` with labels."""
        if input_ids.ndim != 2 or input_ids.shape[0] != pixel_values.shape[0]:
            raise InstructionError(f"input_ids {tuple(input_ids.shape)} must be [B, L] with B = "
                                   f"{pixel_values.shape[0]} images")
        patches, kl = self.embed_images_with_kl(pixel_values)
        dev = self.device
        embeds, mask, labels = self.merge_image_tokens(
            input_ids.to(dev), patches, None if attention_mask is None else attention_mask.to(dev),
            None if labels is None else labels.to(dev))
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        if not self.config.vib_roles:
            return out
        loss = None if out.loss is None else add_kl_term(out.loss, kl, self.config)
        return VLAOutput(loss=loss, logits=out.logits, hidden_states=out.hidden_states, attentions=out.attentions,
                         action_loss=out.loss, kl=kl)

    # ---- prediction ---------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_actions(self, pixel_values: torch.Tensor, instructions: Sequence[str], n_tokens: int) -> DecodeResult:
        """Greedy decode of `n_tokens` action tokens: one prefill (image + prompt), then 1 token per step."""
        if self.device.type == "meta":
            raise CheckpointError("this model lives on the meta device (shapes only, no weights); build it with "
                                  "from_pretrained(path) or from_preset(name) without device='meta' to predict")
        if n_tokens < 1:
            raise StatisticsError(f"cannot decode {n_tokens} action tokens; the statistics' action dim must be >= 1")
        prompts = self.processor.encode_prompts(instructions)
        ids, mask = prompts["input_ids"].to(self.device), prompts["attention_mask"].to(self.device)
        embeds, mask = self._prefill_inputs(ids, mask, self.embed_images(pixel_values))
        padded = bool((mask == 0).any())
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = transformers.DynamicCache(config=self.language_model.config)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask if padded else None,
                                  position_ids=position_ids, use_cache=True, logits_to_keep=1,
                                  **{CACHE_ARG: cache})
        first_logits = out.logits[:, -1].float()
        tokens = [self.next_action_token(first_logits)]
        next_pos = position_ids[:, -1:] + 1
        for _ in range(n_tokens - 1):
            if padded:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = self.language_model(input_ids=tokens[-1][:, None], attention_mask=mask if padded else None,
                                      position_ids=next_pos, use_cache=True, **{CACHE_ARG: cache})
            tokens.append(self.next_action_token(out.logits[:, -1]))
            next_pos = next_pos + 1
        return DecodeResult(torch.stack(tokens, 1).cpu().numpy(), first_logits.cpu())

    def _prefill_inputs(self, ids: torch.Tensor, left_mask: torch.Tensor,
                        patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge patches after each row's BOS, keeping the batch left-padded."""
        pad = (left_mask == 0).sum(1)
        width = ids.shape[1]
        if int(pad.max()) == 0:
            embeds, mask, _ = self.merge_image_tokens(ids, patches, left_mask)
            return embeds, mask
        # shift rows to right padding so BOS is column 0, merge, then shift back to left padding
        cols = torch.arange(width, device=ids.device)
        to_right = (cols[None, :] + pad[:, None]) % width
        ids_r, mask_r = ids.gather(1, to_right), left_mask.gather(1, to_right)
        embeds, mask, _ = self.merge_image_tokens(ids_r, patches, mask_r)
        total = embeds.shape[1]
        cols = torch.arange(total, device=ids.device)
        to_left = (cols[None, :] - pad[:, None]) % total
        embeds = embeds.gather(1, to_left[..., None].expand(-1, -1, embeds.shape[-1]))
        return embeds, mask.gather(1, to_left)

    def next_action_token(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy choice among the action-token ids only (a stray text token cannot become an action)."""
        first = self.action_tokenizer.first_id
        return logits[:, first: self.action_tokenizer.last_id + 1].argmax(-1) + first

    def predict_actions(self, images: Sequence[Any], instructions: Sequence[str],
                        unnorm_key: str | None = None, *, n_samples: int | None = None,
                        temperature: float = 1.0, generator: torch.Generator | None = None) -> np.ndarray:
        """Un-normalized actions [B, action_dim] for a batch of images (HxWx3 uint8 or PIL; {role: image}
        each for a multi-camera checkpoint) and instructions. With `n_samples=K` (one observation):
        K actions [K, action_dim] sampled at `temperature` off one prefill (V-GPS candidates)."""
        if isinstance(instructions, str):
            raise InstructionError("instructions must be a list of strings; for one call use predict_action")
        if len(images) != len(instructions) or len(images) == 0:
            raise InstructionError(f"got {len(images)} images and {len(instructions)} instructions; "
                                   "give one instruction per image (at least one)")
        if n_samples is not None:
            if len(images) != 1:
                raise InstructionError(f"n_samples samples K actions for ONE observation; got {len(images)}")
            from vla.vgps.sampling import sample_actions  # lives with its only user, V-GPS

            return sample_actions(self, images[0], instructions[0], n_samples, temperature, unnorm_key, generator)
        _, stats = select_stats(self.norm_stats, unnorm_key)
        pixel_values = stack_role_images(self.processor.process_images, images, self.config.image_roles)
        result = self.decode_actions(pixel_values, instructions, stats.dim)
        return unnormalize_actions(self.action_tokenizer.decode(result.token_ids), stats)

    def predict_action(self, image: Any = None, instruction: str | None = None, unnorm_key: str | None = None,
                       motion: str | None = None, *, images: Mapping[str, Any] | None = None) -> np.ndarray:
        """The un-normalized action (float64 [action_dim]) for one image (or {role: image}) and instruction.

        RT-H checkpoints (vla/rth) answer the action query for `motion`; with None they run the motion
        query first. A motion given to a flat checkpoint raises `vla.rth.errors.MotionQueryError`."""
        if (image is None) == (images is None):
            raise ImageError(f"pass either image= (a one-camera checkpoint) or images={{role: image}}; this "
                             f"checkpoint reads roles {list(self.config.image_roles)}")
        if instruction is None:
            raise InstructionError("predict_action needs an instruction string")
        if motion is not None or RTH_CONFIG_KEY in self.config.extra:
            from vla.rth.query import predict_action as rth_predict_action

            return rth_predict_action(self, image if images is None else images, instruction, motion, unnorm_key)[0]
        return self.predict_actions([image if images is None else images], [instruction], unnorm_key)[0]

    def predict_motion(self, image: Any, instruction: str) -> str:
        """RT-H's motion query, e.g. "move arm forward" (RT-H checkpoints only)."""
        from vla.rth.query import predict_motions

        return predict_motions(self, [image], [instruction])[0]

    def predict_motions(self, images: Sequence[Any], instructions: Sequence[str]) -> list[str]:
        """RT-H's motion query for a batch (RT-H checkpoints only)."""
        from vla.rth.query import predict_motions

        return predict_motions(self, images, instructions)

    def predict_lookahead(self, images: Sequence[Any], instructions: Sequence[str], motions: Sequence[str],
                          unnorm_key: str | None = None) -> tuple[np.ndarray, list[str]]:
        """RT-H in one batched call: actions for `motions` (from the previous step) and the next motions."""
        from vla.rth.query import predict_lookahead

        return predict_lookahead(self, images, instructions, motions, unnorm_key)


def preset_tokenizer() -> PromptTokenizer:
    """The Llama-2 tokenizer with <PAD> = 32000 that ships inside this package."""
    root = importlib.resources.files("vla.model").joinpath(TOKENIZER_ASSETS)
    with importlib.resources.as_file(root) as folder:
        return PromptTokenizer.from_folder(pathlib.Path(folder))


def has_lora(model: nn.Module) -> bool:
    """Whether peft LoRA layers are injected into the model."""
    return any(type(m).__module__.startswith("peft.") for m in model.modules())
