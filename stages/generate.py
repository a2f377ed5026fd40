"""DVC stage 'generate': see ebm.pipeline.generate."""

from ebm.entry import main
from ebm.pipeline import GeneratePaths, generate

if __name__ == "__main__":
    main(generate, GeneratePaths)
