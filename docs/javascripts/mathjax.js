// MathJax reads the $...$ and $$...$$ that pymdownx.arithmatex wraps in .arithmatex spans.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]] },
  options: { processHtmlClass: "arithmatex", ignoreHtmlClass: ".*" },
};
document$.subscribe(() => {
  MathJax.typesetPromise();
});
