from .pipeline_llamagen import LlamaGenPipeline, check_compatible

__all__ = ["LlamaGenPipeline", "check_compatible"]
