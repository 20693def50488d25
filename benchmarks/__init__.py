"""What ``bench.py`` measures, one job per module (used by ``bench.py`` and its tests, never by the library).

    timing    median wall time, measured peak FLOP/s, FLOP counts, fresh-process wall time and peak RSS
    naive     the naive baselines: per-item PIL/torchvision datasets, per-item CPU normalisation
    steps     timed training steps (naive and ours as variants), an epoch through ``train_one_epoch``
    row       one row of the table (naive, ours, speed-up, target) and the shared figures
    images    synthetic tiles and large mosaics written in parallel
    speed     the ``speed`` rows: input pipeline, train steps, mIoU (and ``cuda_fcn8s`` on CUDA)
    gpu       the ``gpu`` rows: train steps, the loop and the end-to-end run on a GPU
    grading   the ``grading`` rows: ``p2_test.py`` in fresh processes
    report    the JSON record of a run and the printed table
"""
