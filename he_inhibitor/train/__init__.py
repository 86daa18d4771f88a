"""Distillation of the teacher into the HE-friendly student (``he-inhibitor distill``), one job per module.

* ``config``: ``DistillConfig`` (its defaults are the shipped recipe) and the overrides of an experiment;
* ``init``: a fresh student's embeddings from the teacher's vectors, and each word's nearest words;
* ``augment``: teacher-labelled perturbed copies of a batch;
* ``batches``: training batches from the teacher cache;
* ``losses``: the distillation losses and the teacher layer each student layer imitates;
* ``calibration``: each polynomial's bound B and weighted fit from the inputs it sees;
* ``loop``: one training phase (optimiser, schedule, checkpoints);
* ``pipeline``: a whole run, exact phase, calibration, poly phase, saved student;
* ``cli``: the ``distill`` subcommand.

Nothing is re-exported here: import from the module that does the job.
"""
