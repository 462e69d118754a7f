"""Model registry and the registered systems (importing this module registers them all)."""

# Importing the model modules registers them (side effect).
from merc.models import bc_lstm, broad_mamba, df_erc, matav, mlp, transformer  # noqa: F401
from merc.models.registry import (ModelOutput, count_parameters, create_model, get_entry,
                                  list_models, make_config, register_model)

__all__ = ["ModelOutput", "count_parameters", "create_model", "get_entry", "list_models",
           "make_config", "register_model"]
