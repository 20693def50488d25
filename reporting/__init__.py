"""What ``report.py`` does, one job per module (the library never imports this package):

    runs      reading a finished run: its files, best epoch, data kind, the command that made it
    output    the output folder: where it may go, the files the tool owns, the atomic write
    figures   each run's figures, copied or drawn from its files
    markdown  report.md: the seed report's sections, every number from the runs' files
    html      report.html: the same report as one self-contained page
"""
