"""Distillation methods, one subpackage each: Config + objectives + run(config, out_dir)."""
