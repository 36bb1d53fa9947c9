"""The Gradio UI of Alignment Studio. It draws and collects; `pipelines` computes.

Never imports torch, transformers or trl (a test checks `sys.modules` after `import studio.app`).
"""
