"""The shared machinery below the entry-point scripts; one job per module.

    cli            the flags P1 and P2 share, argument types, the exit convention
    distributed    torchrun/SLURM set-up, rank-0 printing, samplers, DDP wrapping
    runtime        device choice, seeds, AMP, RNG state, torch.compile, memory bounds, stop signals
    fileio         atomic file writes (bytes, JSON, CSV, the epoch log), leftover temporaries, AsyncWriter
                   (the one background writer), WrittenFiles (what a grading script wrote)
    runs           a run folder: never clobber another run, one writer at a time, resume, the epoch record
    sinks          where the epoch record goes: the epoch line, log.csv, the optional sinks a flag turns on
    tensorboard    the TensorBoard sink (--tensorboard): scalars per epoch, P2's snapshot masks
    checkpoint     the checkpoint format: build, save (in the background), load, check, rebuild the model
    engine         train_one_epoch / evaluate (the epoch loop lives in each script)
    inference      checkpoint -> model, device, precision, memory format, normalisation for the three
                   inference scripts; P1 inference in batches
    losses         focal loss and the criterion a run asks for
    optim          optimizers and per-epoch schedules
    inputs         model inputs on the device: normalisation, resizing to the input side, memory format
    metrics        the one confusion matrix (accuracy, the course grader's mIoU)
    sliding_window the one P2 predictor: windows of any image, blended, bounded memory
    plots          every figure
    pretrained     reads the backbone weights a model's registry entry names (--pretrained)
    hub            default checkpoints: the manifest, its publish command, the checked download
    course_grader  the course's own mIoU code, kept verbatim as a reference for tests and benchmarks/
"""
