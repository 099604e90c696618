"""Distillation methods, one subpackage each: a Config, its objectives and run(config, out_dir)."""
