"""The model: specs, the zoo, scaling, variants, modules, counting and the size guard."""
