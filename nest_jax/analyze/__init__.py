"""The analysis command line (`python -m nest_jax.analyze`): the evaluators of
`nest_jax.train.evaluators`, built as the training loop builds them, run once on a checkpoint
(`nest_jax.analyze.loop.analyse`), with JSON, PNG and TensorBoard output."""
